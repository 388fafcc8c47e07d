"""Splits, windows and batches: stable seeded splits, BOS-prefixed windows, padded tensors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import PreTrainedTokenizerFast

from autolabel.corpus import MIN_CHUNK_TOKENS, Window, assign_split, batch_windows, iter_windows
from autolabel.errors import CorpusError, InputError
from tests.corpus.files import write_txt

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
    path = write_txt(tmp_path / "a.txt", [_words(50), _words(3), _words(20, 4)])
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
    path = write_txt(tmp_path / "a.txt", [text])
    windows = list(iter_windows(str(path), tokenizer, window=8))
    expected = tokenizer(text, add_special_tokens=False)["input_ids"]
    rebuilt = [t for w in windows for t in w.token_ids[1:]]
    # 30 tokens in chunks of 7: four full chunks, the 2-token tail is dropped.
    assert rebuilt == expected[:28]
    assert [w.start for w in windows] == [0, 7, 14, 21]


def test_all_windows_of_a_document_share_its_split(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    path = write_txt(tmp_path / "a.txt", [_words(40, i) for i in range(30)])
    splits: dict[str, set[str]] = defaultdict(set)
    for win in iter_windows(str(path), tokenizer, window=6, seed=5):
        splits[win.document_id].add(win.split)
        assert win.split == assign_split(win.document_id, seed=5)
    assert len(splits) == 30
    assert all(len(s) == 1 for s in splits.values())
    assert {next(iter(s)) for s in splits.values()} == {"train", "test"}


def test_max_tokens_is_respected(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    path = write_txt(tmp_path / "a.txt", [_words(100, i) for i in range(5)])
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
    path = write_txt(tmp_path / "a.txt", ["a a a a a a"])
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
