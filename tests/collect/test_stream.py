"""``collect`` end to end on the fake model, against the brute-force reference."""

from __future__ import annotations

import pytest

from autolabel.collect import HISTOGRAM_EDGES, CollectSettings, FeatureResult, collect
from autolabel.errors import InputError
from tests.collect.reference import (
    BOS,
    FEATURES,
    VOCAB,
    FakeSAE,
    FakeSubject,
    Ref,
    assert_same,
    examples,
    make_batches,
    qbin,
    ref_quantile,
    ref_random,
    ref_stats,
    ref_top,
    reference,
)


@pytest.fixture(scope="module")
def run() -> tuple[list[FeatureResult], dict[int, list[Ref]], CollectSettings]:
    settings = CollectSettings(seed=3)
    batches = make_batches(180)  # ~60 documents per split
    results = collect(FakeSubject(), FakeSAE(), batches, FEATURES, settings)
    return results, reference(batches, FEATURES, settings.seed), settings


def test_stats_match_brute_force(run: tuple) -> None:
    results, refs, _ = run
    for res in results:
        want = ref_stats(refs[res.feature])
        assert res.n_tokens == want["n_tokens"] and res.n_firing == want["n_firing"]
        assert res.max_activation == pytest.approx(want["max_activation"])
        assert res.mean_activation == pytest.approx(want["mean_activation"])
        assert res.mean_firing_activation == pytest.approx(want["mean_firing_activation"])
        assert res.density == pytest.approx(res.n_firing / res.n_tokens)
        assert res.histogram == want["histogram"]
        assert sum(res.histogram) == res.n_firing and res.histogram_edges == HISTOGRAM_EDGES


def test_top_examples_match_brute_force(run: tuple) -> None:
    results, refs, s = run
    for res in results:
        assert_same(examples(res, "train", "top"), ref_top(refs[res.feature], "train", s.train_top))
        assert_same(examples(res, "test", "top"), ref_top(refs[res.feature], "test", s.test_top))


def test_quantile_examples_are_the_exact_priority_sample(run: tuple) -> None:
    results, refs, s = run
    for res in results[2:]:
        for split in ("train", "validation", "test"):
            k_top, k = s.top(split), s.quantile(split)
            got = examples(res, split, "quantile")
            want = ref_quantile(refs[res.feature], split, k_top, k, s.n_bins)
            assert len(want) >= k // 2  # reservoirs overflow; high bins may run short
            assert_same(got, want)
            assert [e.bin for e in got] == [qbin(r.max, res.max_activation, s.n_bins) for r in want]


@pytest.mark.parametrize("split", ["validation", "test"])
def test_random_examples_are_silent_held_out_windows(run: tuple, split: str) -> None:
    results, refs, s = run
    for res in results:
        got = examples(res, split, "random")
        assert_same(got, ref_random(refs[res.feature], s.random, split))
        assert all(e.split == split and not e.activations.any() for e in got)
        assert len(got) == s.random and all(e.bin is None for e in got)
    assert not [e for r in results for e in r.examples if e.split == "train" and e.kind == "random"]


def test_splits_never_share_documents_and_bins_hold(run: tuple) -> None:
    results, _, s = run
    for res in results:
        splits = ("train", "validation", "test")
        docs = {sp: {e.document_id for e in res.examples if e.split == sp} for sp in splits}
        assert not docs["train"] & docs["test"]
        assert not docs["train"] & docs["validation"] and not docs["validation"] & docs["test"]
        for e in res.examples:
            assert len(e.token_ids) == len(e.activations)
            if e.kind != "random":  # the fake fires feature f on token id f: the window is its
                assert res.feature in e.token_ids
            assert e.max_activation == pytest.approx(float(e.activations.max()))
            if e.kind == "quantile":
                lo, hi = e.bin * res.max_activation / s.n_bins, (e.bin + 1) * res.max_activation
                assert lo < e.max_activation <= hi / s.n_bins + 1e-6
        for sp in splits:
            keys = [(e.document_id, e.start) for e in res.examples
                    if e.split == sp and e.kind != "random"]
            assert len(keys) == len(set(keys))  # quantile never repeats a top window


def test_padding_and_bos_never_count(run: tuple) -> None:
    results, refs, _ = run
    for res in results[:2]:  # latent 0 fires on padding, latent 1 on BOS: both must be silent
        assert res.n_firing == 0 and res.max_activation == 0.0 and res.histogram == [0] * 32
        assert {e.kind for e in res.examples} == {"random"}
    n_real = sum(int((r.tokens != BOS).sum()) for r in refs[0])
    assert all(res.n_tokens == n_real for res in results)
    for e in results[5].examples:
        assert not e.activations[e.token_ids == BOS].any()


def test_deterministic_for_a_seed() -> None:
    batches = make_batches(40)
    a, b, c = (
        collect(FakeSubject(), FakeSAE(), batches, [3, 7], CollectSettings(seed=s))
        for s in (1, 1, 2)
    )

    def sig(results: list[FeatureResult]) -> list:
        return [(e.kind, e.split, e.document_id, e.start) for r in results for e in r.examples]

    assert sig(a) == sig(b)
    assert sig(a) != sig(c)


def test_progress_counts_real_tokens() -> None:
    batches = make_batches(10)
    counts: list[int] = []
    collect(FakeSubject(), FakeSAE(), batches, [2], progress=counts.append)
    assert counts == [int(b.attention_mask.sum()) for b in batches]


@pytest.mark.parametrize("features", [[], [3, 3], [-1], [VOCAB]])
def test_bad_features_are_rejected(features: list[int]) -> None:
    with pytest.raises(InputError, match="feature|latent"):
        collect(FakeSubject(), FakeSAE(), make_batches(2), features)
