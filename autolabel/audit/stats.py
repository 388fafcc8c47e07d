"""Statistics of paired differences, vectorised over features (columns of ``[n_pairs, F]``).

Paired t and Wilcoxon p, effect size d_z = mean/sd, a seeded bootstrap CI of d_z, Benjamini-
Hochberg q across features, a two-group contrast (Welch t, Cohen's d) for tier 3, random
residual directions (the "random feature" null), and the helpers that make numpy results
JSON-safe for flags and the report.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

N_BOOT = 1000
N_RANDOM = 200
DZ_CLIP = 100.0  # |d_z| above this (near-deterministic differences) is reported as 100


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q), monotone, clipped to 1; NaN p counts as 1."""
    p = np.where(np.isnan(p), 1.0, np.asarray(p, dtype=np.float64))
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    q_sorted = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(q_sorted, 1.0)
    return q


def effect_size(diffs: np.ndarray) -> np.ndarray:
    """d_z = mean / sd (ddof 1) per column; 0 when nothing varies, clipped to +-DZ_CLIP."""
    mean = diffs.mean(0)
    sd = diffs.std(0, ddof=1) if diffs.shape[0] > 1 else np.zeros_like(mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        dz = np.where(sd > 0, mean / sd, np.sign(mean) * np.inf)
    return np.clip(np.nan_to_num(dz, nan=0.0), -DZ_CLIP, DZ_CLIP)


def paired_t_p(diffs: np.ndarray) -> np.ndarray:
    """Two-sided one-sample t-test p per column; sd 0 gives p 0 (constant nonzero) or 1."""
    from scipy import stats as sps  # heavy (~1.5 s); a run with no audit to do never loads it
    n = diffs.shape[0]
    mean = diffs.mean(0)
    sd = diffs.std(0, ddof=1) if n > 1 else np.zeros_like(mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (sd / math.sqrt(max(n, 1)))
    p = 2 * sps.t.sf(np.abs(t), df=max(n - 1, 1))
    return np.where(sd > 0, p, np.where(mean != 0, 0.0, 1.0))


def wilcoxon_p(diffs: np.ndarray) -> np.ndarray:
    """Wilcoxon signed-rank p per column (zeros dropped); 1 where every difference is 0."""
    from scipy import stats as sps  # heavy (~1.5 s); a run with no audit to do never loads it
    p = np.ones(diffs.shape[1])
    live = np.flatnonzero((diffs != 0).sum(0) >= 1)
    if live.size:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            res = sps.wilcoxon(diffs[:, live], axis=0, zero_method="wilcox", nan_policy="omit")
        p[live] = np.nan_to_num(np.asarray(res.pvalue, dtype=float), nan=1.0)
    return p


def bootstrap_dz_ci(diffs: np.ndarray, n_boot: int = N_BOOT, seed: int = 0,
                    level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of d_z per column, all columns in one matrix product.

    Resampling pairs with replacement is a multinomial count vector per replicate, so the
    replicate means are ``counts @ diffs / n`` (no [n_boot, n, F] array is ever built).
    """
    n = diffs.shape[0]
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    mean = counts @ diffs / n
    var = (counts @ (diffs**2) / n - mean**2) * n / max(n - 1, 1)
    sd = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        dz = np.where(sd > 1e-12, mean / sd, np.sign(mean) * DZ_CLIP)
    dz = np.clip(dz, -DZ_CLIP, DZ_CLIP)
    alpha = (1 - level) / 2
    return np.quantile(dz, alpha, axis=0), np.quantile(dz, 1 - alpha, axis=0)


@dataclass
class PairedStats:
    """Per-feature statistics of one set of paired differences (arrays of length F)."""

    n: int
    mean: np.ndarray
    sd: np.ndarray
    dz: np.ndarray
    p_t: np.ndarray
    p_wilcoxon: np.ndarray
    q: np.ndarray
    mean_abs: np.ndarray


def paired_stats(diffs: np.ndarray) -> PairedStats:
    """d_z, t and Wilcoxon p, BH q (over the columns) and mean |diff| for ``[n, F]`` diffs."""
    diffs = np.asarray(diffs, dtype=np.float64)
    p_t = paired_t_p(diffs)
    sd = diffs.std(0, ddof=1) if diffs.shape[0] > 1 else np.zeros(diffs.shape[1])
    return PairedStats(diffs.shape[0], diffs.mean(0), sd, effect_size(diffs), p_t,
                       wilcoxon_p(diffs), bh_qvalues(p_t), np.abs(diffs).mean(0))


@dataclass
class ContrastStats:
    """Two groups of rows compared per column: Welch t p, BH q and Cohen's d (pooled sd)."""

    n_plus: int
    n_minus: int
    mean_plus: np.ndarray
    mean_minus: np.ndarray
    d: np.ndarray
    p: np.ndarray
    q: np.ndarray


def contrast_stats(plus: np.ndarray, minus: np.ndarray) -> ContrastStats:
    """Is a column larger in ``plus`` rows than in ``minus`` rows? (both need >= 2 rows)

    Welch's t-test (unequal variances) for p; d = mean difference / pooled sd. A difference
    with no variance at all gives p 0 and d +-DZ_CLIP; no difference gives p 1 and d 0.
    """
    from scipy import stats as sps  # heavy (~1.5 s); a run with no audit to do never loads it
    plus, minus = np.asarray(plus, dtype=np.float64), np.asarray(minus, dtype=np.float64)
    n1, n2 = plus.shape[0], minus.shape[0]
    m1, m2 = plus.mean(0), minus.mean(0)
    v1, v2 = plus.var(0, ddof=1), minus.var(0, ddof=1)
    se2 = v1 / n1 + v2 / n2
    gap = m1 - m2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = gap / np.sqrt(se2)
        df = se2**2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
        p = 2 * sps.t.sf(np.abs(t), df=np.nan_to_num(df, nan=1.0))
        pooled = np.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2))
        d = np.where(pooled > 0, gap / pooled, np.sign(gap) * DZ_CLIP)
    p = np.where(se2 > 0, np.nan_to_num(p, nan=1.0), np.where(gap != 0, 0.0, 1.0))
    d = np.clip(np.nan_to_num(d, nan=0.0), -DZ_CLIP, DZ_CLIP)
    return ContrastStats(n1, n2, m1, m2, d, p, bh_qvalues(p))


def random_directions(d_model: int, n: int, seed: int) -> np.ndarray:
    """Unit random directions in the residual stream: the 'random feature' baseline."""
    rng = np.random.default_rng(seed + 7919)
    dirs = rng.standard_normal((d_model, n)).astype(np.float32)
    return dirs / np.linalg.norm(dirs, axis=0, keepdims=True)


# ---------------------------------------------------------------------------------------------
# JSON-safe numbers (flags and report.json must never hold NaN or numpy scalars)


def p95_abs(values: np.ndarray) -> float:
    """95th percentile of |values| (0 for none)."""
    return float(np.percentile(np.abs(values), 95)) if values.size else 0.0


def finite_or_none(x: Any) -> float | None:
    """A JSON-safe float (NaN/inf -> None)."""
    v = float(x)
    return v if math.isfinite(v) else None


def json_safe(obj: Any) -> Any:
    """Recursively make numpy values JSON-safe (string keys, plain floats, NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic | float):
        return finite_or_none(obj) if isinstance(obj, np.floating | float) else obj.item()
    return obj
