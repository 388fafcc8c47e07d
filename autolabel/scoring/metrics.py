"""The numbers scorers report: pooled Pearson r, truth normalisation, expected digit, balanced
accuracy and ROC-AUC. Pure numpy, no model: everything here is checked by hand in the tests."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from autolabel.scoring.types import DIGITS, SCALE_MAX


def pooled_pearson(true: Sequence[np.ndarray], pred: Sequence[np.ndarray]) -> float | None:
    """Pearson r over all tokens of all sequences pooled (Bills et al. 2023).

    Pooled, never a mean of per-sequence r: that would hide whether the simulator separates
    activating sequences from random ones. None when either side is constant (r undefined): a
    simulator that predicts the same value everywhere has explained nothing, and that must not
    read as a number.
    """
    t: np.ndarray = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in true]
                                   or [np.zeros(0)])
    p: np.ndarray = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in pred]
                                   or [np.zeros(0)])
    if len(t) != len(p):
        raise ValueError(f"{len(t)} true values vs {len(p)} predictions")
    if len(t) < 2 or np.ptp(t) == 0 or np.ptp(p) == 0:
        return None
    return float(np.corrcoef(t, p)[0, 1])


def normalise_truth(acts: Sequence[float] | np.ndarray, scale: float) -> np.ndarray:
    """True activations on the simulator's 0-9 scale, by the feature's max over its *train*
    examples (the caller passes it): the test set must not set its own scale."""
    arr = np.nan_to_num(np.asarray(acts, dtype=np.float64), nan=0.0)
    if scale <= 0 or not math.isfinite(scale):
        return np.zeros_like(arr)
    return np.clip(arr / scale, 0.0, 1.0) * SCALE_MAX


def expected_digit(top: Mapping[str, float]) -> float | None:
    """Expected value over the digit tokens 0-9 among ``top`` (token -> logprob), renormalised
    over the digits only; None when no digit is among them."""
    best: dict[int, float] = {}
    for token, logprob in top.items():
        text = token.strip()
        if len(text) == 1 and text in DIGITS and logprob is not None and logprob > -math.inf:
            best[int(text)] = max(logprob, best.get(int(text), -math.inf))
    if not best:
        return None
    digits = np.array(list(best), dtype=np.float64)
    logps = np.array(list(best.values()), dtype=np.float64)
    weights = np.exp(logps - logps.max())
    return float((digits * weights).sum() / weights.sum())


def balanced_accuracy(labels: Sequence[int], guesses: Sequence[int]) -> float | None:
    """Mean of the true-positive and true-negative rates (None without both classes)."""
    y, g = np.asarray(labels), np.asarray(guesses)
    if not (y == 1).any() or not (y == 0).any():
        return None
    return float(((g[y == 1] == 1).mean() + (g[y == 0] == 0).mean()) / 2)


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """ROC-AUC as the Mann-Whitney probability that a positive outranks a negative."""
    y, s = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))
