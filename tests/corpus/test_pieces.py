"""Long documents are read and tokenised in bounded pieces: windows are those of the whole text,
and peak memory does not depend on line length (issue 18.10)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from autolabel.corpus import MAX_PIECE_CHARS, iter_documents, iter_windows, split_document
from tests.corpus.test_windows import WORDS, _words
from tests.corpus.test_windows import tokenizer as tokenizer  # noqa: F401 - fixture


def test_a_long_line_arrives_in_bounded_pieces_of_one_id(tmp_path: Path) -> None:
    text = _words(60_000)  # ~300k characters on one line
    path = tmp_path / "long.txt"
    path.write_text("short one\n\n" + text + "\n\nlast\n", encoding="utf-8")
    docs = list(iter_documents(str(path)))
    assert docs[0].id == "long.txt:1" and docs[-1].id == "long.txt:5"
    pieces = [d for d in docs if d.id == "long.txt:3"]
    assert len(pieces) >= 4 and all(len(d.text) <= MAX_PIECE_CHARS for d in pieces)
    assert "".join(d.text for d in pieces) == text
    assert all(d.text[0] == " " for d in pieces[1:])  # cut where whitespace begins


def test_split_document_keeps_short_texts_whole() -> None:
    assert [d.text for d in split_document("d", "  padded  ")] == ["  padded  "]
    long = "x" * (MAX_PIECE_CHARS * 2 + 5)  # no whitespace at all: hard cuts
    assert "".join(d.text for d in split_document("d", long)) == long


def test_windows_of_pieces_equal_windows_of_the_whole_text(
        tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    text = _words(40_000)
    path = tmp_path / "one.txt"
    path.write_text(text + "\n", encoding="utf-8")
    wins = list(iter_windows(str(path), tokenizer, window=16))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    rebuilt = [t for w in wins for t in w.token_ids[1:]]
    assert rebuilt == ids[:len(rebuilt)] and len(ids) - len(rebuilt) < 15
    assert [w.start for w in wins] == list(range(0, 15 * len(wins), 15))
    assert {w.document_id for w in wins} == {"one.txt:1"}


PEAK = """
import resource, sys
from transformers import PreTrainedTokenizerFast
from autolabel.corpus import iter_windows
tok = PreTrainedTokenizerFast.from_pretrained(sys.argv[2])
n = sum(1 for _ in iter_windows(sys.argv[1], tok, window=64))
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_peak_memory_does_not_depend_on_line_length(
        tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    """The same ~12 MB of words as one line and as paragraphs: same windows, similar peak RSS
    (tokenising the line whole took ~2.7x the paragraphs' peak before pieces)."""
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    words = " ".join(WORDS[i % len(WORDS)] for i in range(2_500_000))
    (tmp_path / "line.txt").write_text(words + "\n", encoding="utf-8")
    chunks = [words[i:i + 2000] for i in range(0, len(words), 2000)]
    (tmp_path / "paras.txt").write_text("\n\n".join(chunks) + "\n", encoding="utf-8")
    peaks = {}
    for name in ("line", "paras"):
        out = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path / f"{name}.txt"),
                              str(tmp_path / "tok")], capture_output=True, text=True, check=True)
        n_windows, peak_kb = map(int, out.stdout.split())
        peaks[name] = peak_kb
        assert n_windows > 30_000
    assert peaks["line"] < 1.25 * peaks["paras"], json.dumps(peaks)
