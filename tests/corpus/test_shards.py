"""Three nested splits by document, shards by document, and shard reads that add up to exactly
one budgeted read (issue 13.2, issue 17.2)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from autolabel.corpus import (
    MIN_CHUNK_TOKENS,
    WindowSpec,
    assign_split,
    budgeted_windows,
    document_shard,
    iter_windows,
    plan_corpus,
    shard_windows,
)
from autolabel.errors import InputError
from tests.corpus.files import write_txt
from tests.corpus.test_windows import _words
from tests.corpus.test_windows import tokenizer as tokenizer  # noqa: F401 - fixture

IDS = [f"corpus:{i}" for i in range(20_000)]


def test_three_splits_have_their_fractions() -> None:
    share = Counter(assign_split(i, 3, test_fraction=0.3, validation_fraction=0.2) for i in IDS)
    assert abs(share["test"] / len(IDS) - 0.3) < 0.02
    assert abs(share["validation"] / len(IDS) - 0.2) < 0.02
    assert abs(share["train"] / len(IDS) - 0.5) < 0.02


def test_splits_are_nested_so_train_stays_train() -> None:
    """0.5 test re-divided as 0.3 test + 0.2 validation: every train document stays train and
    every new test document was a test document."""
    for doc in IDS[:5000]:
        old = assign_split(doc, 0, test_fraction=0.5)
        new = assign_split(doc, 0, test_fraction=0.3, validation_fraction=0.2)
        assert (old == "train") == (new == "train")
        assert new != "test" or old == "test"


def test_bad_validation_fraction_is_an_error() -> None:
    with pytest.raises(InputError, match="validation_fraction"):
        assign_split("d", test_fraction=0.6, validation_fraction=0.5)
    with pytest.raises(InputError, match="validation_fraction"):
        assign_split("d", validation_fraction=-0.1)


def test_shards_are_stable_and_balanced() -> None:
    shards = Counter(document_shard(i, 0, 4) for i in IDS)
    assert set(shards) == {0, 1, 2, 3} and min(shards.values()) > 4500
    assert document_shard("x", 0, 4) == document_shard("x", 0, 4)
    with pytest.raises(InputError, match="n_shards"):
        document_shard("x", 0, 0)


def corpus(tmp_path: Path) -> str:
    paragraphs = [_words(5 + (i * 7) % 40, i) for i in range(60)]
    return str(write_txt(tmp_path / "c.txt", paragraphs))


def key(w: object) -> tuple:
    return (w.document_id, w.split, w.start, w.token_ids)  # type: ignore[attr-defined]


@pytest.mark.parametrize("budget", [None, 37, 100, 101, 333, 10**6])
@pytest.mark.parametrize("n_shards", [1, 2, 3])
def test_shard_reads_add_up_to_one_budgeted_read(tmp_path: Path, tokenizer: PreTrainedTokenizerFast,
                                                 budget: int | None, n_shards: int) -> None:
    spec = WindowSpec(corpus(tmp_path), window=8, seed=2, test_fraction=0.3,
                      validation_fraction=0.2)
    one = [w for _, w in budgeted_windows(spec, tokenizer, budget)]
    plan = plan_corpus(spec, tokenizer, budget)
    assert plan.cut is not None
    shards = [list(shard_windows(spec, tokenizer, plan.cut, i, n_shards))
              for i in range(n_shards)]
    assert sorted(map(key, one)) == sorted(key(w) for s in shards for w in s)
    for i, shard in enumerate(shards):
        assert {document_shard(w.document_id, 2, n_shards) for w in shard} <= {i}
    assert sum(plan.tally.tokens.values()) == sum(len(w.token_ids) for w in one)
    assert sum(plan.tally.windows.values()) == len(one)
    per_document = Counter(w.split for w in {w.document_id: w for w in one}.values())
    assert {k: n for k, n in plan.tally.documents.items() if n} == dict(per_document)


def test_budget_is_never_exceeded(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    spec = WindowSpec(corpus(tmp_path), window=8)
    for budget in range(MIN_CHUNK_TOKENS, 120):
        total = sum(len(w.token_ids) for _, w in budgeted_windows(spec, tokenizer, budget))
        assert budget - MIN_CHUNK_TOKENS - 8 < total <= budget


def test_windows_carry_three_splits_and_no_document_is_in_two(
        tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    splits: dict[str, set[str]] = {}
    for w in iter_windows(corpus(tmp_path), tokenizer, window=8, test_fraction=0.3,
                          validation_fraction=0.2):
        splits.setdefault(w.document_id, set()).add(w.split)
    assert all(len(s) == 1 for s in splits.values())
    assert {next(iter(s)) for s in splits.values()} == {"train", "validation", "test"}


def test_empty_corpus_has_no_cut(tmp_path: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    path = write_txt(tmp_path / "e.txt", ["the"])  # shorter than MIN_CHUNK_TOKENS
    assert plan_corpus(WindowSpec(str(path), window=8), tokenizer, 100).cut is None
