"""Tests for autolabel.corpus: sources, stable splits, windows and batches (fast, offline)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import PreTrainedTokenizerFast

from autolabel.corpus import (
    BUILTIN_SOURCES,
    MIN_CHUNK_TOKENS,
    Document,
    Window,
    assign_split,
    batch_windows,
    corpus_fingerprint,
    iter_documents,
    iter_windows,
    strip_wiki_markup,
)
from autolabel.errors import CorpusError, InputError

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "and", "then"]
WORDS += ["came", "back", "home", "again"]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with BOS/PAD/UNK built in memory: one token per word."""
    vocab = {"<pad>": 0, "<bos>": 1, "<unk>": 2}
    vocab.update({word: i + 3 for i, word in enumerate(WORDS)})
    model = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    model.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=model, bos_token="<bos>", pad_token="<pad>", unk_token="<unk>"
    )


def _words(n: int, offset: int = 0) -> str:
    """n words from the vocabulary, so token counts are exact."""
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(n))


def _write_txt(path: Path, paragraphs: list[str]) -> Path:
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ splits


def test_assign_split_is_deterministic_and_seeded() -> None:
    ids = [f"doc-{i}" for i in range(200)]
    first = [assign_split(i, seed=0) for i in ids]
    assert first == [assign_split(i, seed=0) for i in ids]
    assert first != [assign_split(i, seed=1) for i in ids]
    assert set(first) == {"train", "test"}


def test_assign_split_is_stable_across_processes() -> None:
    """sha256, not hash(): a fresh interpreter (different hash salt) agrees."""
    code = "from autolabel.corpus import assign_split; print(assign_split('x:1', 7, 0.3))"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == assign_split("x:1", 7, 0.3)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.8])
def test_assign_split_fraction_is_close(fraction: float) -> None:
    ids = [f"corpus:{i}" for i in range(20_000)]
    share = sum(assign_split(i, seed=3, test_fraction=fraction) == "test" for i in ids) / len(ids)
    assert abs(share - fraction) < 0.02


def test_assign_split_extremes_and_bad_fraction() -> None:
    assert {assign_split(f"d{i}", test_fraction=0.0) for i in range(50)} == {"train"}
    assert {assign_split(f"d{i}", test_fraction=1.0) for i in range(50)} == {"test"}
    with pytest.raises(InputError, match="test_fraction"):
        assign_split("d", test_fraction=1.5)


# ------------------------------------------------------------------ windows


def test_windows_start_with_bos_and_fit(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    path = _write_txt(tmp_path / "a.txt", [_words(50), _words(3), _words(20, 4)])
    windows = list(iter_windows(str(path), tokenizer, window=8))
    assert windows
    for win in windows:
        assert win.token_ids[0] == tokenizer.bos_token_id
        assert MIN_CHUNK_TOKENS + 1 <= len(win.token_ids) <= 8
        assert tokenizer.bos_token_id not in win.token_ids[1:]
    # The 3-word paragraph is shorter than MIN_CHUNK_TOKENS and yields nothing.
    assert {w.document_id for w in windows} == {"a.txt:1", "a.txt:5"}


def test_windows_cover_document_in_order(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    text = _words(30)
    path = _write_txt(tmp_path / "a.txt", [text])
    windows = list(iter_windows(str(path), tokenizer, window=8))
    expected = tokenizer(text, add_special_tokens=False)["input_ids"]
    rebuilt = [t for w in windows for t in w.token_ids[1:]]
    # 30 tokens in chunks of 7: four full chunks, the 2-token tail is dropped.
    assert rebuilt == expected[:28]
    assert [w.start for w in windows] == [0, 7, 14, 21]


def test_all_windows_of_a_document_share_its_split(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    path = _write_txt(tmp_path / "a.txt", [_words(40, i) for i in range(30)])
    splits: dict[str, set[str]] = defaultdict(set)
    for win in iter_windows(str(path), tokenizer, window=6, seed=5):
        splits[win.document_id].add(win.split)
        assert win.split == assign_split(win.document_id, seed=5)
    assert len(splits) == 30
    assert all(len(s) == 1 for s in splits.values())
    assert {next(iter(s)) for s in splits.values()} == {"train", "test"}


def test_max_tokens_is_respected(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    path = _write_txt(tmp_path / "a.txt", [_words(100, i) for i in range(5)])
    windows = list(iter_windows(str(path), tokenizer, window=16, max_tokens=50))
    assert sum(len(w.token_ids) for w in windows) <= 50
    assert sum(len(w.token_ids) for w in windows) >= 50 - MIN_CHUNK_TOKENS
    assert all(w.token_ids[0] == tokenizer.bos_token_id for w in windows)


def test_window_argument_errors(tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(InputError, match="window"):
        next(iter_windows("python-docs", tokenizer, window=2))
    with pytest.raises(InputError, match="max_tokens"):
        next(iter_windows("python-docs", tokenizer, max_tokens=0))


def test_tokenizer_without_bos_is_an_error(tmp_path: Path) -> None:
    model = Tokenizer(WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
    model.pre_tokenizer = Whitespace()
    no_bos = PreTrainedTokenizerFast(tokenizer_object=model, unk_token="<unk>")
    path = _write_txt(tmp_path / "a.txt", ["a a a a a a"])
    with pytest.raises(CorpusError, match="BOS"):
        next(iter_windows(str(path), no_bos))


# ------------------------------------------------------------------ batches


def test_batch_windows_pads_right_with_mask() -> None:
    wins = [
        Window("d", "train", 0, (1, 5, 6, 7)),
        Window("d", "train", 3, (1, 8, 9)),
        Window("e", "test", 0, (1, 4, 4, 4, 4)),
    ]
    batches = list(batch_windows(wins, batch_size=2, pad_id=0))
    assert [len(b.windows) for b in batches] == [2, 1]
    first = batches[0]
    assert first.input_ids.dtype == torch.long and first.attention_mask.dtype == torch.long
    assert first.input_ids.tolist() == [[1, 5, 6, 7], [1, 8, 9, 0]]
    assert first.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batches[1].input_ids.shape == (1, 5)
    assert batches[1].windows == [wins[2]]
    with pytest.raises(InputError, match="batch_size"):
        next(batch_windows(wins, batch_size=0, pad_id=0))


# ------------------------------------------------------------------ local files


def test_txt_paragraphs_and_ids(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("first para\nstill first\n\n\nsecond\n\n   \nthird", encoding="utf-8")
    docs = list(iter_documents(str(path)))
    assert docs == [
        Document("notes.txt:1", "first para\nstill first"),
        Document("notes.txt:5", "second"),
        Document("notes.txt:8", "third"),
    ]


def test_jsonl_with_text_field(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [{"body": "alpha", "n": 1}, {"body": ""}, {"body": "gamma"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    docs = list(iter_documents(str(path), text_field="body"))
    assert docs == [Document("d.jsonl:1", "alpha"), Document("d.jsonl:3", "gamma")]
    with pytest.raises(CorpusError, match=r"no field 'text' \(available: 'body', 'n'\)"):
        list(iter_documents(str(path)))


def test_jsonl_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\nnot json\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"d.jsonl:2 is not valid JSON"):
        list(iter_documents(str(path)))


def test_csv_with_text_field(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "content"])
        writer.writerows([["1", "one, with comma"], ["2", "two\nlines"], ["3", " "]])
    docs = list(iter_documents(str(path), text_field="content"))
    assert docs == [Document("d.csv:0", "one, with comma"), Document("d.csv:1", "two\nlines")]
    with pytest.raises(CorpusError, match="available: 'id', 'content'"):
        list(iter_documents(str(path)))


def test_parquet_with_text_field(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    table = pa.table({"txt": ["first", None, "third"] * 1000, "k": list(range(3000))})
    pq.write_table(table, path, row_group_size=700)
    docs = list(iter_documents(str(path), text_field="txt"))
    assert len(docs) == 2000
    assert docs[:2] == [Document("d.parquet:0", "first"), Document("d.parquet:2", "third")]
    assert docs[-1].id == "d.parquet:2999"
    with pytest.raises(CorpusError, match="available: 'txt', 'k'"):
        list(iter_documents(str(path)))


def test_glob_over_mixed_files(tmp_path: Path) -> None:
    sub = tmp_path / "data" / "more"
    sub.mkdir(parents=True)
    _write_txt(tmp_path / "data" / "b.txt", ["bee"])
    _write_txt(sub / "a.txt", ["ay"])
    (tmp_path / "data" / "c.jsonl").write_text('{"text": "sea"}\n', encoding="utf-8")
    (tmp_path / "data" / "skip.md").write_text("ignored", encoding="utf-8")
    docs = list(iter_documents(str(tmp_path / "data" / "**" / "*.*")))
    assert [d.id for d in docs] == ["b.txt:1", "c.jsonl:1", "more/a.txt:1"]
    assert [d.text for d in docs] == ["bee", "sea", "ay"]


def test_ids_do_not_depend_on_location(tmp_path: Path) -> None:
    for name in ("x", "y"):
        (tmp_path / name).mkdir()
        _write_txt(tmp_path / name / "a.txt", ["same text"])
    first = list(iter_documents(str(tmp_path / "x" / "*.txt")))
    second = list(iter_documents(str(tmp_path / "y" / "a.txt")))
    assert first == second


def test_local_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        list(iter_documents(str(tmp_path / "missing.txt")))
    with pytest.raises(CorpusError, match="matches no"):
        list(iter_documents(str(tmp_path / "*.jsonl")))
    with pytest.raises(CorpusError, match="Unknown corpus 'wikipedia'.*hf:NAME"):
        list(iter_documents("wikipedia"))
    bad = tmp_path / "latin.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(CorpusError, match="not UTF-8"):
        list(iter_documents(str(bad)))


def test_error_messages_are_one_line(tmp_path: Path) -> None:
    for spec in ("nope", str(tmp_path / "missing.csv"), "hf:"):
        with pytest.raises(CorpusError) as info:
            list(iter_documents(spec))
        assert "\n" not in str(info.value)


def test_fingerprints(tmp_path: Path) -> None:
    path = _write_txt(tmp_path / "a.txt", ["one"])
    first = corpus_fingerprint(str(path))
    assert first.startswith("sha256:") and first == corpus_fingerprint(str(path))
    assert corpus_fingerprint(str(path), text_field="body") != first
    _write_txt(path, ["two"])
    assert corpus_fingerprint(str(path)) != first
    assert corpus_fingerprint("hf:wikitext:wikitext-2-raw-v1") == "hf:wikitext:wikitext-2-raw-v1"
    assert corpus_fingerprint("wikipedia-sample").startswith("wikipedia-sample@gensim-")
    assert corpus_fingerprint("python-docs").startswith("python-docs@python-3.")


# ------------------------------------------------------------------ hub


def test_hf_offline_fails_fast_with_one_line() -> None:
    code = (
        "from autolabel.corpus import iter_documents\n"
        "from autolabel.errors import CorpusError\n"
        "try:\n    next(iter_documents('hf:wikitext:wikitext-2-raw-v1'))\n"
        "except CorpusError as e:\n    print('ERR', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("ERR")]
    assert len(lines) == 1, out.stdout + out.stderr
    assert "unreachable" in lines[0] and "local file" in lines[0]


def test_hf_unreachable_endpoint_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(CorpusError, match=r"hub \(127.0.0.1:9\) is unreachable"):
        next(iter_documents("hf:some/dataset"))


# ------------------------------------------------------------------ built-ins


def test_builtin_sources_listed() -> None:
    assert BUILTIN_SOURCES == ("wikipedia-sample", "python-docs")


def test_python_docs_yields_many_documents() -> None:
    docs = list(iter_documents("python-docs"))
    assert len(docs) > 50
    assert len({d.id for d in docs}) == len(docs)
    assert all(d.id.startswith("python-docs:") and d.text for d in docs)
    assert sum(len(d.text) for d in docs) > 200_000


def test_wikipedia_sample_is_clean_prose() -> None:
    docs = list(iter_documents("wikipedia-sample"))
    ids = [d.id for d in docs]
    assert len(set(ids)) == len(ids)
    wiki = [d for d in docs if d.id.startswith("wikipedia-sample:enwiki:")]
    news = [d for d in docs if d.id.startswith("wikipedia-sample:lee")]
    assert len(wiki) > 100 and len(news) == 350
    for doc in docs:
        for markup in ("[[", "]]", "{{", "}}", "<ref", "'''", "{|"):
            assert markup not in doc.text, (doc.id, markup)
    assert sum(len(d.text) for d in docs) > 2_500_000
    assert any("Asia" in d.text for d in wiki)


def test_strip_wiki_markup() -> None:
    raw = (
        "'''Foo''' is a [[bar|baz]] {{cite|x}} thing<ref>note</ref>.\n"
        "== History ==\n* item one\n{| class=wikitable\n| a || b\n|}\n"
        "[[File:x.jpg|thumb|A caption]]\nEnd.\n== References ==\n* junk"
    )
    text = strip_wiki_markup(raw)
    assert "Foo is a baz thing." in text
    assert "History\nitem one" in text
    assert "junk" not in text and "wikitable" not in text
    assert "[[" not in text and "{{" not in text and "'''" not in text
