"""Sampling is a pure function of (seed, feature, document, start): the same windows give the same
results whatever the batch size, the window order, the feature grouping or the sharding, and
partial states merge exactly (issue 18.1, issue 17.2)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from autolabel.collect import (
    CollectSettings,
    ExampleCollector,
    FeatureResult,
    collect,
    collect_state,
    priority_key_reference,
    priority_keys,
    window_ids,
)
from autolabel.collect.keys import document_hash, window_id_reference
from tests.collect.reference import FakeSAE, FakeSubject, Window, _pad, make_batches

SETTINGS = CollectSettings(train_top=4, validation_top=3, test_top=3, train_quantile=6,
                           validation_quantile=5, test_quantile=5, random=6, n_bins=3, seed=11)
FEATURES = [2, 3, 5, 8, 13]


def windows(n_docs: int = 150) -> list[Window]:
    return [w for b in make_batches(n_docs) for w in b.windows]


def batched(wins: list[Window], size: int) -> list:
    return [_pad(wins[i:i + size]) for i in range(0, len(wins), size)]


def signature(results: list[FeatureResult]) -> list[tuple]:
    """Everything a result holds, arrays as bytes, so two runs compare with ``==``."""
    out = []
    for r in results:
        stats = (r.feature, r.n_tokens, r.n_firing, r.density, r.max_activation,
                 r.mean_activation, r.mean_firing_activation, tuple(r.histogram))
        exs = tuple((e.split, e.kind, e.bin, e.rank, e.document_id, e.start,
                     e.token_ids.tobytes(), e.activations.tobytes(), e.max_activation)
                    for e in r.examples)
        out.append((stats, exs))
    return out


def run(batches: list, features: list[int] = FEATURES) -> list[FeatureResult]:
    return collect(FakeSubject(), FakeSAE(), batches, features, SETTINGS)


@pytest.fixture(scope="module")
def baseline() -> list[tuple]:
    return signature(run(batched(windows(), 4)))


def test_keys_match_the_integer_reference_bit_for_bit() -> None:
    docs = ["doc0", "wikipedia-sample:enwiki:12", "x" * 300, "ü-ñ", ""]
    starts = [0, 63, 10**9, 7, 2**40]
    wids = window_ids(docs, starts)
    assert [int(w) for w in wids] == [window_id_reference(d, s) for d, s in zip(docs, starts,
                                                                                strict=True)]
    assert all(0 <= int(w) < 2**62 for w in wids)
    features = torch.tensor([0, 1, 4095, 10**6])
    for seed in (0, 1, -3, 2**40):
        keys = priority_keys(seed, features, wids)
        want = [[priority_key_reference(seed, int(f), d, s) for f in features]
                for d, s in zip(docs, starts, strict=True)]
        assert keys.tolist() == want
    assert document_hash("doc0") == document_hash("doc0") != document_hash("doc1")


def test_keys_are_uniform_and_independent_of_the_other_features() -> None:
    wids = window_ids([f"d{i}" for i in range(20_000)], [0] * 20_000)
    keys = priority_keys(5, torch.tensor([3, 9]), wids)
    alone = priority_keys(5, torch.tensor([9]), wids)
    assert torch.equal(keys[:, 1], alone[:, 0])
    assert abs(float(keys.mean()) - 0.5) < 0.01 and float(keys.min()) >= 0 > float(keys.max()) - 1
    assert abs(float(torch.corrcoef(keys.T)[0, 1])) < 0.03  # features draw independently
    assert not torch.equal(keys, priority_keys(6, torch.tensor([3, 9]), wids))


@pytest.mark.parametrize("size", [1, 7])
def test_batch_size_does_not_change_results(baseline: list[tuple], size: int) -> None:
    assert signature(run(batched(windows(), size))) == baseline


def test_window_order_does_not_change_results(baseline: list[tuple]) -> None:
    wins = windows()
    random.Random(0).shuffle(wins)
    assert signature(run(batched(wins, 5))) == baseline


def test_feature_grouping_does_not_change_results(baseline: list[tuple]) -> None:
    batches = batched(windows(), 4)
    grouped = run(batches, [13, 3]) + run(batches, [2, 8, 5])
    by_feature = {r.feature: r for r in grouped}
    assert signature([by_feature[f] for f in FEATURES]) == baseline


@pytest.mark.parametrize("n_shards", [3])
def test_shards_merged_in_any_order_equal_one_pass(baseline: list[tuple], n_shards: int) -> None:
    """Shards by document hash, each collected apart (own batching), then merged: exact."""
    shards: list[list[Window]] = [[] for _ in range(n_shards)]
    for w in windows():
        shards[document_hash(w.document_id) % n_shards].append(w)
    for order in (list(range(n_shards)), list(reversed(range(n_shards)))):
        states = [collect_state(FakeSubject(), FakeSAE(), batched(shards[i], 3 + i), FEATURES,
                                SETTINGS) for i in order]
        merged = states[0]
        assert merged is not None
        for state in states[1:]:
            assert state is not None
            merged.merge(state)
        assert signature(merged.results()) == baseline


def test_merging_an_empty_state_changes_nothing(baseline: list[tuple]) -> None:
    state = collect_state(FakeSubject(), FakeSAE(), batched(windows(), 4), FEATURES, SETTINGS)
    assert state is not None
    state.merge(ExampleCollector(FEATURES, 2, SETTINGS, {1}))
    assert signature(state.results()) == baseline
    assert collect_state(FakeSubject(), FakeSAE(), [], FEATURES, SETTINGS) is None


def test_sums_are_exact_whatever_the_order() -> None:
    """Float sums depend on the order of additions; the collector's fixed-point sums do not."""
    values = np.random.default_rng(0).lognormal(0, 3, size=5000).astype(np.float32)
    means = set()
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(len(values))
        coll = ExampleCollector([0], 1)
        for chunk in np.array_split(values[order], 37):
            acts = torch.tensor(chunk).reshape(-1, 1, 1)
            ids = torch.ones((len(chunk), 1), dtype=torch.long)
            n = len(chunk)
            coll.update(acts, ids, torch.ones_like(ids), [f"d{i}" for i in range(n)],
                        ["train"] * n, list(range(n)))
        means.add(coll.results()[0].mean_activation)
    assert len(means) == 1
    assert means.pop() == pytest.approx(float(values.astype(np.float64).mean()), rel=1e-9)
