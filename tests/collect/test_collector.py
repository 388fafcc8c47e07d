"""``ExampleCollector`` fed batch by batch: exact sampling as maxima grow, bounded state, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autolabel.collect import CollectSettings, ExampleCollector, collect, priority_keys, window_ids
from autolabel.errors import CollectionError, InputError
from tests.collect.reference import (
    BOS,
    FEATURES,
    VOCAB,
    FakeSAE,
    FakeSubject,
    Ref,
    T,
    examples,
    make_batches,
    ref_quantile,
)


def test_growing_maxima_merge_fine_bins_exactly() -> None:
    """Maxima grow over time (fine bins merge repeatedly); the sample must stay exact."""
    gen = np.random.default_rng(1)
    settings = CollectSettings(train_top=3, train_quantile=7, test_top=2, test_quantile=4, n_bins=3)
    coll = ExampleCollector([10, 20], window=4, settings=settings)
    seen: dict[int, list[Ref]] = {0: [], 1: []}
    for step in range(60):
        levels = gen.integers(0, 1 + step // 4, size=(5, 2))  # grid j -> value (j + 0.25) * 0.8
        acts = torch.zeros((5, 4, 2))
        acts[:, 2, :] = torch.tensor((levels + 0.25) * 0.8, dtype=torch.float32)
        acts[:, 2, :] *= torch.tensor(gen.random((5, 2)) < 0.8)
        splits = [("train", "validation", "test")[int(gen.integers(0, 3))] for _ in range(5)]
        docs = [f"d{step}-{i}" for i in range(5)]
        coll.update(acts, torch.full((5, 4), 5), torch.ones((5, 4)), docs, splits, [0] * 5)
        wids = window_ids(docs, [0] * 5)
        keys = priority_keys(settings.seed, torch.tensor([10, 20]), wids)
        for i in range(5):
            for j in range(2):
                mx = float(acts[i, :, j].max())
                seen[j].append(
                    Ref(
                        int(wids[i]),
                        splits[i],
                        docs[i],
                        0,
                        np.zeros(0),
                        acts[i, :, j].numpy(),
                        mx,
                        float(keys[i, j]),
                    )
                )
    for j, res in enumerate(coll.results()):
        for split, k_top, k in (("train", 3, 7), ("validation", 10, 10), ("test", 2, 4)):
            want = ref_quantile(seen[j], split, k_top, k, 3)
            got = examples(res, split, "quantile")
            assert [e.document_id for e in got] == [r.document_id for r in want]


def test_state_does_not_grow_with_batches() -> None:
    def state_after(n: int) -> tuple[list[tuple[int, ...]], int]:
        coll = ExampleCollector(
            FEATURES, window=T, settings=CollectSettings(), ignore_token_ids={BOS}
        )
        batches = make_batches(2000, batch=8)[:n]
        for b in batches:
            acts = torch.nn.functional.one_hot(b.input_ids, VOCAB).float() * 1.5
            docs = [w.document_id for w in b.windows]
            coll.update(
                acts,
                b.input_ids,
                b.attention_mask,
                docs,
                [w.split for w in b.windows],
                [0] * len(docs),
            )
        return [tuple(t.shape) for t in coll.state_tensors()], coll.n_banked_windows

    shapes10, _ = state_after(10)
    shapes300, banked = state_after(1000)
    assert shapes10 == shapes300
    live = len(FEATURES) * (20 + 10 + 10 + 3 * 4 * 5 * 2 + 2 * 20)
    assert banked <= max(4096, 2 * live)


def test_longer_batches_widen_the_store() -> None:
    coll = ExampleCollector([0], window=2)
    for length in (2, 5):
        acts = torch.arange(1, length + 1, dtype=torch.float32).reshape(1, length, 1)
        ids = torch.arange(length).reshape(1, length)
        coll.update(acts, ids, torch.ones_like(ids), [f"d{length}"], ["train"], [0])
    top = examples(coll.results()[0], "train", "top")
    np.testing.assert_array_equal(top[0].activations, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(top[1].activations, [1, 2])


def test_bad_batches_are_rejected() -> None:
    coll = ExampleCollector([1, 2], window=4)
    ids, mask = torch.ones((2, 4), dtype=torch.long), torch.ones((2, 4))
    with pytest.raises(CollectionError, match=r"\[B, T, 2\]"):
        coll.update(torch.zeros((2, 4, 3)), ids, mask, ["a", "b"], ["train"] * 2, [0, 0])
    with pytest.raises(CollectionError, match="split"):
        coll.update(torch.zeros((2, 4, 2)), ids, mask, ["a", "b"], ["train", "dev"], [0, 0])
    with pytest.raises(CollectionError, match="same features"):
        coll.merge(ExampleCollector([1, 3], window=4))
    with pytest.raises(CollectionError, match="no token windows"):
        collect(FakeSubject(), FakeSAE(), [], [2])
    with pytest.raises(InputError):
        CollectSettings(n_bins=0)
