"""Null distribution, bootstrap CI and verdict of a score (issue 13.4), against hand-computed
cases, plus the properties that make them honest."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autolabel.scoring.metrics import pooled_pearson
from autolabel.scoring.trust import (
    TrustSettings,
    _derangement,
    _pearson_from_counts,
    assess,
    bootstrap_ci,
    null_distribution,
    verdict,
)


def arrays(*rows: list[float]) -> list[np.ndarray]:
    return [np.array(r, dtype=np.float64) for r in rows]


def test_null_by_hand_three_sequences() -> None:
    """A fires everywhere, B and C nowhere; predictions are perfect. Any derangement of three
    sequences is a 3-cycle, so A's [1, 1] lands on B or C and A gets zeros:
    t = [1,1,0,0,0,0], p = [0,0,1,1,0,0]; means 1/3; cov sum = -2/3; var sums 4/3 each;
    r = (-2/3) / (4/3) = -0.5 for every null sample (shifts move constants: no change)."""
    truth = arrays([1, 1], [0, 0], [0, 0])
    pred = arrays([1, 1], [0, 0], [0, 0])
    null = null_distribution(truth, pred, n=20, seed=3)
    assert len(null) == 20
    assert np.allclose(null, -0.5)


def test_bootstrap_by_hand_two_sequences() -> None:
    """A: t=[2,0], p=[1,0]; B: t=[0,0], p=[0,1]. Resamples of two sequences: {A,A} (1/4)
    gives r = 1; {A,B} (1/2) gives t=[2,0,0,0], p=[1,0,0,1]: cov sum 1, var sums 3 and 1,
    r = 1/sqrt(3); {B,B} (1/4) has constant truth (undefined, dropped). Of the defined
    resamples 2/3 are 1/sqrt(3) and 1/3 are 1, so the 2.5% bound is 1/sqrt(3), the 97.5% one 1.
    """
    truth, pred = arrays([2, 0], [0, 0]), arrays([1, 0], [0, 1])
    assert pooled_pearson(truth, pred) == pytest.approx(1 / math.sqrt(3))
    low, high = bootstrap_ci(truth, pred, n_boot=2000, alpha=0.05, seed=0)  # type: ignore[misc]
    assert low == pytest.approx(1 / math.sqrt(3))
    assert high == pytest.approx(1.0)


def test_fast_bootstrap_equals_pooled_pearson_on_every_resample() -> None:
    rng = np.random.default_rng(7)
    truth = [rng.random(int(rng.integers(3, 9))) * (i % 3 == 0) for i in range(12)]
    pred = [t + rng.random(len(t)) for t in truth]
    counts = rng.multinomial(12, np.full(12, 1 / 12), size=50)
    fast = _pearson_from_counts(truth, pred, counts)
    for row, value in zip(counts, fast, strict=True):
        idx = np.repeat(np.arange(12), row)
        slow = pooled_pearson([truth[i] for i in idx], [pred[i] for i in idx])
        assert (slow is None and np.isnan(value)) or value == pytest.approx(slow)


def test_derangement_has_no_fixed_point() -> None:
    rng = np.random.default_rng(0)
    for n in range(2, 9):
        for _ in range(50):
            perm = _derangement(n, rng)
            assert sorted(perm) == list(range(n)) and all(p != i for i, p in enumerate(perm))


def test_null_is_centred_on_zero_for_unrelated_predictions() -> None:
    """Predictions independent of the truth: the observed r is one draw from the null."""
    rng = np.random.default_rng(1)
    truth = [rng.random(16) * (i < 10) for i in range(30)]
    pred = [rng.random(16) for _ in range(30)]
    null = null_distribution(truth, pred, n=400, seed=0)
    assert abs(null.mean()) < 0.02
    assert 0.02 < np.quantile(null, 0.95) < 0.15


def test_verdict_rule() -> None:
    assert verdict(0.5, 0.1, 0.2, 0.3) == "trusted"
    assert verdict(0.5, 0.1, 0.2, 0.15) == "weak"  # above null p95, CI reaches into it
    assert verdict(0.2, 0.1, 0.2, 0.1) == "at_floor"  # not above the null
    assert verdict(0.5, 0.6, 0.2, 0.3) == "at_floor"  # a wrong explanation does as well
    assert verdict(None, 0.1, 0.2, 0.3) == "unscored"
    assert verdict(0.5, None, None, None) == "unscored"


def test_assess_gives_a_verdict_with_its_evidence() -> None:
    rng = np.random.default_rng(2)
    truth = [rng.random(16) * (i < 10) * 9 for i in range(30)]
    good = [t + rng.random(16) for t in truth]
    value = pooled_pearson(truth, good)
    trust = assess(truth, good, value, 0.05, "pooled_pearson", TrustSettings(n_null=50))
    assert trust.verdict == "trusted" and trust.null_n == 50
    assert trust.ci_low is not None and trust.null_p95 is not None
    assert trust.ci_low > trust.null_p95 and trust.ci_low <= value <= trust.ci_high
    noise = [rng.random(16) for _ in truth]
    weak = assess(truth, noise, pooled_pearson(truth, noise), 0.0, "pooled_pearson",
                  TrustSettings(n_null=50))
    assert weak.verdict in {"at_floor", "weak"}


def test_assess_balanced_accuracy_for_detection() -> None:
    labels = arrays(*[[1]] * 10, *[[0]] * 10)
    perfect = arrays(*[[1]] * 10, *[[0]] * 10)
    trust = assess(labels, perfect, 1.0, 0.5, "balanced_accuracy", TrustSettings(n_null=50))
    assert trust.verdict == "trusted" and trust.null_p95 is not None and trust.null_p95 < 0.8


def test_fast_null_equals_the_general_path() -> None:
    """Fixed-length windows take a vectorised path; it must give the loop's numbers."""
    rng = np.random.default_rng(5)
    truth = [rng.random(8) * (i < 4) for i in range(9)]
    pred = [t + rng.random(8) for t in truth]
    fast = null_distribution(truth, pred, n=30, seed=4)
    slow = null_distribution(truth, pred, n=30, seed=4,
                             metric=lambda t, p: pooled_pearson(t, p))
    assert len(fast) == 30 and np.allclose(fast, slow)
