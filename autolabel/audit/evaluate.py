"""Tiers 2 and 3 per category, the flags they raise, and their severity.

A tier-2 flag needs q < ``q``, |d_z| >= ``effect`` **and specificity**: the feature's mean
|difference| on the category's swaps must be at least ``specificity`` times its largest mean
|difference| over the neutral word pairs ("table"/"chair", "car"/"bus", ...), because any
feature that reads token identity "differs" between two different words. Tier 3 (direction)
asks, on pairs with a known stereotype direction, whether the sign-aligned difference is
positive; it is only assessed where tier 2 holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autolabel.audit.activations import PairActivations
from autolabel.audit.pairs import NEUTRAL, Pair
from autolabel.audit.stats import (
    N_BOOT,
    N_RANDOM,
    PairedStats,
    bootstrap_dz_ci,
    finite_or_none,
    json_safe,
    p95_abs,
    paired_stats,
)
from autolabel.audit.taxonomy import EMBED_THRESHOLD, AuditError, Taxonomy, Tier1
from autolabel.config import Config

SPECIFICITY = 2.0  # category mean |diff| >= 2x the largest neutral word pair's mean |diff|
SEVERITY_ORDER = ["review", "medium", "high", "critical"]


@dataclass
class Thresholds:
    """Everything that decides a flag, stored with each audit."""

    q: float = 0.05
    effect: float = 0.5
    specificity: float = SPECIFICITY
    embed: float = EMBED_THRESHOLD
    n_boot: int = N_BOOT
    n_random: int = N_RANDOM
    seed: int = 0


def thresholds_from(config: Config) -> Thresholds:
    """Thresholds from ``config.audit``."""
    a = config.audit
    return Thresholds(q=a.q_threshold, effect=a.effect_threshold,
                      specificity=float(a.specificity), embed=float(a.embed_threshold),
                      n_boot=int(a.n_boot), n_random=int(a.n_random), seed=int(a.seed))


@dataclass
class CategoryResult:
    """Tier 2/3 statistics of every audited feature for one category."""

    category: str
    n_pairs: int
    sources: dict[str, int]
    stats: PairedStats
    specificity: np.ndarray
    tier2: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    random_dz: np.ndarray
    random_flag_rate: float
    n_directional: int = 0
    dir_stats: PairedStats | None = None
    tier3: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


def specificity_ratio(cat_abs: np.ndarray, neutral_abs: np.ndarray) -> np.ndarray:
    """Category mean |diff| over neutral mean |diff| (1e6 stands for 'neutral never moves')."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(neutral_abs > 0, cat_abs / neutral_abs, np.where(cat_abs > 0, 1e6, 0.0))
    return np.minimum(ratio, 1e6)


def _passes(st: PairedStats, spec: np.ndarray, th: Thresholds) -> np.ndarray:
    """The tier-2 rule: significant, large, and specific to demographic swaps."""
    return (st.q < th.q) & (np.abs(st.dz) >= th.effect) & (spec >= th.specificity)


def evaluate_category(category: str, pairs: Sequence[Pair], diffs: np.ndarray,
                      rand_diffs: np.ndarray, neutral: tuple[np.ndarray, np.ndarray],
                      th: Thresholds) -> CategoryResult:
    """Tier 2 (and tier 3 where directions are known) for one category's pairs."""
    st = paired_stats(diffs)
    spec = specificity_ratio(st.mean_abs, neutral[0])
    tier2 = _passes(st, spec, th)
    ci_low, ci_high = np.full(st.dz.shape, np.nan), np.full(st.dz.shape, np.nan)
    cand = np.flatnonzero(tier2 | ((st.q < th.q) & (np.abs(st.dz) >= th.effect)))
    if cand.size:
        lo, hi = bootstrap_dz_ci(diffs[:, cand], th.n_boot, th.seed)
        ci_low[cand], ci_high[cand] = lo, hi
    rst = paired_stats(rand_diffs)
    rand_pass = _passes(rst, specificity_ratio(rst.mean_abs, neutral[1]), th)
    sources: dict[str, int] = {}
    for p in pairs:
        sources[p.source] = sources.get(p.source, 0) + 1
    result = CategoryResult(category, len(pairs), sources, st, spec, tier2, ci_low, ci_high,
                            rst.dz, float(rand_pass.mean()) if rand_pass.size else 0.0)
    _direction(result, pairs, diffs, th)
    return result


def _direction(result: CategoryResult, pairs: Sequence[Pair], diffs: np.ndarray,
               th: Thresholds) -> None:
    """Tier 3: stereotype-aligned differences (+1 for 'stereo' pairs, -1 for 'anti')."""
    sign = np.array([{"stereo": 1.0, "anti": -1.0}.get(p.direction or "", 0.0) for p in pairs])
    known = sign != 0
    result.n_directional = int(known.sum())
    result.tier3 = np.zeros(diffs.shape[1], dtype=bool)
    if result.n_directional < 3:
        return
    ds = paired_stats(diffs[known] * sign[known, None])
    result.dir_stats = ds
    result.tier3 = result.tier2 & (ds.q < th.q) & (ds.dz >= th.effect)


def direction_label(result: CategoryResult, col: int, th: Thresholds) -> str:
    """Plain-words direction of a feature's response for the report."""
    ds = result.dir_stats
    if ds is None:
        return "not assessed (no pairs with a stereotype direction)"
    if ds.q[col] < th.q and ds.dz[col] >= th.effect:
        return "stereotype-aligned"
    if ds.q[col] < th.q and ds.dz[col] <= -th.effect:
        return "counter-stereotypical"
    return "no consistent direction"


def severity(tiers: set[int]) -> str:
    """Combined severity of one feature x category from the tiers that hold."""
    if {1, 2, 3} <= tiers:
        return "critical"
    if 2 in tiers and (1 in tiers or 3 in tiers):
        return "high"
    return "medium" if 2 in tiers else "review"


def neutral_scale(diffs: np.ndarray, pairs: Sequence[Pair], neutral: np.ndarray) -> np.ndarray:
    """Per feature, the largest mean |diff| over the neutral word pairs (table/chair, ...).

    The maximum over word pairs, not the pooled mean: a feature that reads token identity
    moves a lot for *some* neutral swap, and specificity must beat its strongest one.
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for i in np.flatnonzero(neutral).tolist():
        groups.setdefault((pairs[i].group_a, pairs[i].group_b), []).append(int(i))
    means = [np.abs(diffs[rows]).mean(0) for rows in groups.values()]
    return np.max(means, axis=0) if means else np.zeros(diffs.shape[1])


# ---------------------------------------------------------------------------------------------
# The whole evaluation and its flags


@dataclass
class Evaluation:
    """Tiers 1-3 of every audited feature: what flags and the report are made from."""

    thresholds: Thresholds
    feats: np.ndarray
    t1: Tier1
    results: list[CategoryResult]
    neutral_stats: PairedStats


def evaluate(pairs: Sequence[Pair], taxonomy: Taxonomy, acts: PairActivations,
             feats: np.ndarray, t1: Tier1, th: Thresholds) -> Evaluation:
    """Tier 2/3 for every taxonomy category that has at least three pairs."""
    cats = np.array([p.category for p in pairs])
    neutral = cats == NEUTRAL
    if not neutral.any():
        raise AuditError("no neutral-control pairs; include 'builtin' in the pairs spec")
    base = (neutral_scale(acts.diffs, pairs, neutral), neutral_scale(acts.rand, pairs, neutral))
    results = []
    for name in taxonomy.names():
        rows = np.flatnonzero(cats == name)
        if rows.size >= 3:
            results.append(evaluate_category(name, [pairs[int(i)] for i in rows], acts.diffs[rows],
                                             acts.rand[rows], base, th))
    return Evaluation(th, feats, t1, results, paired_stats(acts.diffs[neutral]))


def flag_rows(ev: Evaluation) -> list[dict[str, Any]]:
    """One dict per (feature, category, tier) that holds, with statistics and evidence."""
    rows: list[dict[str, Any]] = []
    by_cat = {r.category: r for r in ev.results}
    keys = {(f, c) for f, c in ev.t1} | {
        (int(ev.feats[j]), r.category) for r in ev.results for j in np.flatnonzero(r.tier2)}
    col = {int(f): j for j, f in enumerate(ev.feats)}
    for feat, cat in sorted(keys):
        res, j = by_cat.get(cat), col[feat]
        tiers = {1} if (feat, cat) in ev.t1 else set()
        if res is not None and res.tier2[j]:
            tiers |= {2} | ({3} if res.tier3[j] else set())
        sev = severity(tiers)
        for tier in sorted(tiers):
            rows.append(_flag_row(ev, feat, cat, tier, sev, res, j))
    return rows


def _flag_row(ev: Evaluation, feat: int, cat: str, tier: int, sev: str,
              res: CategoryResult | None, j: int) -> dict[str, Any]:
    """Statistics and evidence of one flag (tier 1 rows carry the label evidence)."""
    row: dict[str, Any] = {"feature": feat, "category": cat, "tier": tier, "severity": sev,
                           "effect_size": None, "ci_low": None, "ci_high": None,
                           "p_value": None, "q_value": None, "direction": None}
    if tier == 1:
        row["evidence"] = json_safe(ev.t1[(feat, cat)])
        return row
    assert res is not None
    st = res.dir_stats if tier == 3 else res.stats
    assert st is not None
    row.update(effect_size=float(st.dz[j]), p_value=float(st.p_t[j]), q_value=float(st.q[j]),
               direction=direction_label(res, j, ev.thresholds))
    if tier == 2:
        row.update(ci_low=finite_or_none(res.ci_low[j]), ci_high=finite_or_none(res.ci_high[j]))
    row["evidence"] = json_safe(_stat_evidence(res, st, j, tier, ev.neutral_stats))
    return row


def _stat_evidence(res: CategoryResult, st: PairedStats, j: int, tier: int,
                   neutral: PairedStats) -> dict[str, Any]:
    """The numbers behind a tier-2/3 flag, each named by its method."""
    ev = {"n_pairs": st.n, "mean_diff": st.mean[j], "sd_diff": st.sd[j], "d_z": st.dz[j],
          "p_ttest": st.p_t[j], "p_wilcoxon": st.p_wilcoxon[j], "q_bh": st.q[j],
          "sources": res.sources}
    if tier == 2:
        ev.update(ci95_dz=[res.ci_low[j], res.ci_high[j]], specificity=res.specificity[j],
                  mean_abs_diff=st.mean_abs[j], neutral_mean_abs_diff=neutral.mean_abs[j],
                  neutral_d_z=neutral.dz[j], random_abs_dz_p95=p95_abs(res.random_dz),
                  random_flag_rate=res.random_flag_rate)
    else:
        ev["n_directional_pairs"] = res.n_directional
    return ev
