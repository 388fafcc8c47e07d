"""How far is a score from chance? A null distribution, a bootstrap CI and a verdict per score.

A score alone ("0.026") cannot tell a reader whether it is distinguishable from chance, and one
wrong-explanation floor is a single noisy draw. Every score therefore gets, from the
predictions the scorer already made (no extra LLM call):

- a **null distribution**: the metric recomputed with each held-out sequence's predictions
  paired with *another* sequence's truth (a random derangement of the sequences), circularly
  shifted by a random offset within the sequence. Why this null is valid for pooled Pearson:
  pooled r rewards two things, putting high predictions on the activating sequences (between
  sequences) and on the activating tokens (within them). Under H0, "the explanation carries no
  information about where the feature fires", predictions are unrelated to truths, so pairing
  them up differently must not change the distribution of r. A derangement moves every
  sequence's predictions onto another sequence (breaking the between-sequence pairing; no
  sequence keeps its own), and the shift breaks the within-sequence alignment (windows are
  centred on their maximum, so unshifted predictions would still line up by position). Both
  keep each side's marginals: the spread of predictions, their autocorrelation along a
  sequence, and the mix of activating and random sequences. Shuffling single tokens instead
  would ignore the autocorrelation and make the null too narrow.
- a **bootstrap CI**: held-out sequences resampled with replacement (sequences, not tokens,
  are the independent units), the metric recomputed on each resample.
- a **verdict** from both and the floor (:func:`verdict`).

The rule's parameters (``verdict_alpha``, ``n_null``, ``n_boot``, ``seed``) live in the
``[scoring]`` config, which every run stores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from autolabel.scoring.metrics import balanced_accuracy, pooled_pearson

Metric = Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], float | None]
RULE = ("trusted: CI low > null p(1-alpha) and score > floor; at_floor: score <= null "
        "p(1-alpha) or score <= floor; weak: otherwise; unscored: no score, null or CI")


def _balanced(truth: Sequence[np.ndarray], pred: Sequence[np.ndarray]) -> float | None:
    """Balanced accuracy with one (label, guess) pair per "sequence" (detection/fuzzing)."""
    labels = [int(t[0]) for t in truth]
    return balanced_accuracy(labels, [int(round(float(p[0]))) for p in pred])


METRICS: dict[str, Metric] = {"pooled_pearson": pooled_pearson,
                              "balanced_accuracy": _balanced}


@dataclass(frozen=True)
class TrustSettings:
    """The verdict rule's parameters (from ``[scoring]``)."""

    alpha: float = 0.05
    n_null: int = 100
    n_boot: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class Trust:
    """What a score is stored with besides its floor."""

    null_mean: float | None
    null_p95: float | None  # the null's (1 - alpha) quantile
    null_n: int
    ci_low: float | None
    ci_high: float | None
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the score's details keep a copy with the rule)."""
        return asdict(self)


UNSCORED = Trust(None, None, 0, None, None, "unscored")


def null_distribution(truth: Sequence[np.ndarray], pred: Sequence[np.ndarray], n: int,
                      seed: int, metric: Metric = pooled_pearson) -> np.ndarray:
    """``n`` null values of ``metric`` (module docstring: derangement + circular shift).

    Predictions moved onto a sequence of another length are tiled or cut to fit. Samples
    where the metric is undefined (constant side) are dropped, so fewer than ``n`` may come
    back; with fewer than two sequences there is no null at all.
    """
    if len(truth) < 2:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    draws = [(_derangement(len(truth), rng),
              [int(rng.integers(0, max(1, len(t)))) for t in truth]) for _ in range(n)]
    lengths = {len(t) for t in truth} | {len(p) for p in pred}
    if metric is pooled_pearson and len(lengths) == 1:  # the common case: fixed windows
        values = _stacked_null(np.asarray(truth, np.float64), np.asarray(pred, np.float64),
                               draws)
    else:
        values = np.array([_value(metric, truth, [
            _fit(pred[j], len(truth[i]), shifts[i]) for i, j in enumerate(perm)])
            for perm, shifts in draws])
    return values[np.isfinite(values)]


def bootstrap_ci(truth: Sequence[np.ndarray], pred: Sequence[np.ndarray], n_boot: int,
                 alpha: float, seed: int,
                 metric: Metric = pooled_pearson) -> tuple[float, float] | None:
    """The (alpha/2, 1 - alpha/2) percentile CI of ``metric`` over sequence resamples.

    Pooled Pearson uses per-sequence sums (exactly the same r, computed for all resamples at
    once); other metrics are recomputed per resample. Resamples where the metric is undefined
    are dropped; None when fewer than half are defined (the CI would describe a few lucky
    resamples, not the score).
    """
    if len(truth) < 2:
        return None
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(truth), np.full(len(truth), 1 / len(truth)), size=n_boot)
    if metric is pooled_pearson:
        values = _pearson_from_counts(truth, pred, counts)
    else:
        values = np.array([_resampled(metric, truth, pred, row) for row in counts])
    values = values[np.isfinite(values)]
    if len(values) < n_boot / 2:
        return None
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def verdict(value: float | None, floor: float | None, null_p: float | None,
            ci_low: float | None) -> str:
    """trusted | weak | at_floor | unscored (:data:`RULE`).

    ``trusted`` needs the whole CI above the null's (1 - alpha) quantile *and* the score above
    its wrong-explanation floor; a score not above the null quantile or the floor is
    ``at_floor``; in between (above both, but the CI reaches down into the null) is ``weak``.
    """
    if value is None or null_p is None or ci_low is None:
        return "unscored"
    if value <= null_p or (floor is not None and value <= floor):
        return "at_floor"
    return "trusted" if ci_low > null_p else "weak"


def assess(truth: Sequence[np.ndarray] | None, pred: Sequence[np.ndarray] | None,
           value: float | None, floor: float | None, metric: str,
           settings: TrustSettings) -> Trust:
    """The null summary, CI and verdict of one score (``UNSCORED`` without a value)."""
    fn = METRICS.get(metric)
    if value is None or truth is None or pred is None or fn is None:
        return UNSCORED
    null = null_distribution(truth, pred, settings.n_null, settings.seed, fn)
    ci = bootstrap_ci(truth, pred, settings.n_boot, settings.alpha, settings.seed, fn)
    if len(null) < min(8, settings.n_null) or ci is None:
        return Trust(None, None, len(null), None, None, "unscored")
    null_p = float(np.quantile(null, 1 - settings.alpha))
    return Trust(float(null.mean()), null_p, len(null), ci[0], ci[1],
                 verdict(value, floor, null_p, ci[0]))


def _derangement(n: int, rng: np.random.Generator) -> list[int]:
    """A uniformly random n-cycle (Sattolo's algorithm): a permutation with no fixed point."""
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i))
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def _stacked_null(truth: np.ndarray, pred: np.ndarray,
                  draws: Sequence[tuple[list[int], list[int]]]) -> np.ndarray:
    """Pooled r of every null draw at once, for sequences of one length (``[seq, token]``
    arrays): the same numbers as the general path, without a Python loop per sequence."""
    n_seq, length = truth.shape
    perms = np.array([perm for perm, _ in draws])
    shifts = np.array([shift for _, shift in draws])
    cols = (np.arange(length)[None, None, :] - shifts[:, :, None]) % length
    moved = pred[perms[:, :, None], cols]  # [draw, seq, token]: rolled right by the shift
    t = truth.ravel() - truth.mean()
    p = moved.reshape(len(draws), -1)
    p = p - p.mean(axis=1, keepdims=True)
    var_t, var_p = float(t @ t), (p * p).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (p @ t) / np.sqrt(var_t * var_p)
    defined = (np.ptp(truth) > 0) & (np.ptp(p, axis=1) > 0)
    return np.where(defined, r, np.nan)


def _value(metric: Metric, truth: Sequence[np.ndarray], pred: Sequence[np.ndarray]) -> float:
    """``metric`` as a float (NaN where undefined)."""
    value = metric(truth, pred)
    return float("nan") if value is None else float(value)


def _fit(values: np.ndarray, length: int, shift: int) -> np.ndarray:
    """``values`` tiled or cut to ``length``, then rolled by ``shift``."""
    arr = np.asarray(values, dtype=np.float64)
    if len(arr) == 0:
        return np.zeros(length)
    if len(arr) != length:
        arr = np.resize(arr, length)
    return np.roll(arr, shift)


def _pearson_from_counts(truth: Sequence[np.ndarray], pred: Sequence[np.ndarray],
                         counts: np.ndarray) -> np.ndarray:
    """Pooled r of every resample (a row of ``counts``: how often each sequence is drawn)."""
    stats = np.array([[len(t), t.sum(), p.sum(), (t * t).sum(), (p * p).sum(), (t * p).sum()]
                      for t, p in ((np.asarray(t, np.float64), np.asarray(p, np.float64))
                                   for t, p in zip(truth, pred, strict=True))])
    n, st, sp, stt, spp, stp = (counts @ stats).T
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = stp - st * sp / n
        var_t, var_p = stt - st * st / n, spp - sp * sp / n
        r = cov / np.sqrt(var_t * var_p)
    # A constant side has zero variance up to rounding: r is undefined there, as in
    # pooled_pearson.
    defined = (var_t > 1e-12 * np.maximum(stt, 1.0)) & (var_p > 1e-12 * np.maximum(spp, 1.0))
    return np.where(defined, r, np.nan)


def _resampled(metric: Metric, truth: Sequence[np.ndarray], pred: Sequence[np.ndarray],
               row: np.ndarray) -> float:
    """``metric`` on one resample; NaN where undefined."""
    idx = np.repeat(np.arange(len(truth)), row).tolist()
    return _value(metric, [truth[i] for i in idx], [pred[i] for i in idx])
