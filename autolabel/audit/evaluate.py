"""Tiers 2 and 3 per category, on pairs oriented by demographic pole.

Tier 2 tests the **oriented** difference ``act(pole-a side) - act(pole-b side)`` of each pair
(:mod:`~autolabel.audit.orient`; for gender, female minus male), so a feature that fires on one
group's terms moves every pair the same way whichever sentence a file lists first. A flag needs
q < ``q``, |d_z| >= ``effect`` **and specificity**: the feature's mean |difference| on the
category's swaps must be at least ``specificity`` times its largest mean |difference| over the
neutral word pairs ("table"/"chair", ...), because any feature that reads token identity
"differs" between two different words. Replication across template families and sources is
measured per feature (:mod:`~autolabel.audit.replication`).

Tier 3 keeps the stereotype sign: among oriented pairs with a known stereotype direction, is
the feature's group difference larger where the pole-a sentence is the stereotype-consistent
one than where the pole-b sentence is (Welch t, Cohen's d)? A feature that only reads the group
term has the same difference in both contexts and is not tier 3, even on CrowS-Pairs, whose
stereotype-consistent sentences are mostly about the disadvantaged group. Tier 3 is only
assessed where tier 2 holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autolabel.audit.activations import PairActivations
from autolabel.audit.orient import Orientation, orient_pairs
from autolabel.audit.pairs import NEUTRAL, Pair
from autolabel.audit.replication import (
    MIN_UNIT_PAIRS,
    UnitStats,
    replication_units,
    source_units,
    unit_stats,
)
from autolabel.audit.stats import (
    N_BOOT,
    N_RANDOM,
    ContrastStats,
    PairedStats,
    bootstrap_dz_ci,
    contrast_stats,
    paired_stats,
)
from autolabel.audit.taxonomy import EMBED_THRESHOLD, AuditError, Category, Taxonomy, Tier1
from autolabel.config import Config

SPECIFICITY = 2.0  # category mean |diff| >= 2x the largest neutral word pair's mean |diff|
MIN_CONTEXTS = 3  # stereotype-consistent and -inconsistent pairs needed for tier 3


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
    min_unit_pairs: int = MIN_UNIT_PAIRS


def thresholds_from(config: Config) -> Thresholds:
    """Thresholds from ``config.audit``."""
    a = config.audit
    return Thresholds(q=a.q_threshold, effect=a.effect_threshold,
                      specificity=float(a.specificity), embed=float(a.embed_threshold),
                      n_boot=int(a.n_boot), n_random=int(a.n_random), seed=int(a.seed),
                      min_unit_pairs=int(a.min_unit_pairs))


@dataclass
class CategoryResult:
    """Tier 2/3 statistics of every audited feature for one category (oriented pairs)."""

    category: str
    poles: tuple[str, str] | None
    orientation: str  # "poles" | "as-given"
    n_pairs: int
    sources: dict[str, int]
    rows: np.ndarray  # global indices of the oriented pairs
    signs: np.ndarray  # their orientation signs (+1 keep, -1 swapped)
    stats: PairedStats
    specificity: np.ndarray
    tier2: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    random_dz: np.ndarray
    random_flag_rate: float
    per_source: list[dict[str, Any]]
    unit_cols: dict[int, int]  # feature column -> position in the unit statistics
    units: list[UnitStats]
    by_source: list[UnitStats]
    n_plus: int = 0  # oriented pairs whose pole-a sentence is the stereotype-consistent one
    n_minus: int = 0  # ... whose pole-b sentence is
    dir_stats: ContrastStats | None = None
    tier3: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def n_oriented(self) -> int:
        """Pairs that entered the signed tests."""
        return int(self.rows.size)

    @property
    def n_unoriented(self) -> int:
        """Pairs left out because their spans did not say which side is which group."""
        return self.n_pairs - self.n_oriented

    @property
    def n_directional(self) -> int:
        """Oriented pairs with a known stereotype direction."""
        return self.n_plus + self.n_minus


def specificity_ratio(cat_abs: np.ndarray, neutral_abs: np.ndarray) -> np.ndarray:
    """Category mean |diff| over neutral mean |diff| (1e6 stands for 'neutral never moves')."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(neutral_abs > 0, cat_abs / neutral_abs, np.where(cat_abs > 0, 1e6, 0.0))
    return np.minimum(ratio, 1e6)


def _passes(st: PairedStats, spec: np.ndarray, th: Thresholds) -> np.ndarray:
    """The tier-2 rule: significant, large, and specific to demographic swaps."""
    return (st.q < th.q) & (np.abs(st.dz) >= th.effect) & (spec >= th.specificity)


@dataclass
class CategoryInput:
    """One category's pairs with their raw differences and orientation."""

    category: Category
    pairs: list[Pair]  # every pair of the category
    rows: np.ndarray  # their global indices
    diffs: np.ndarray  # [n, F] A minus B
    rand: np.ndarray  # [n, R] A minus B, random directions
    signs: np.ndarray  # [n] orientation
    stereo: np.ndarray  # [n] stereotype sign relative to the pole-a sentence
    orientation: str


def evaluate_category(data: CategoryInput, neutral: tuple[np.ndarray, np.ndarray],
                      th: Thresholds, extra_cols: Iterable[int] = ()) -> CategoryResult:
    """Tier 2 (and tier 3 where directions are known) on one category's oriented pairs."""
    keep = np.flatnonzero(data.signs != 0)
    sign = data.signs[keep].astype(np.float64)[:, None]
    diffs, rand = data.diffs[keep] * sign, data.rand[keep] * sign
    kept = [data.pairs[int(i)] for i in keep]
    st = paired_stats(diffs)
    spec = specificity_ratio(st.mean_abs, neutral[0])
    tier2 = _passes(st, spec, th)
    ci_low, ci_high = np.full(st.dz.shape, np.nan), np.full(st.dz.shape, np.nan)
    cand = np.flatnonzero(tier2 | ((st.q < th.q) & (np.abs(st.dz) >= th.effect)))
    if cand.size:
        ci_low[cand], ci_high[cand] = bootstrap_dz_ci(diffs[:, cand], th.n_boot, th.seed)
    rst = paired_stats(rand)
    rand_pass = _passes(rst, specificity_ratio(rst.mean_abs, neutral[1]), th)
    cols = sorted({int(j) for j in np.flatnonzero(tier2)} | set(extra_cols))
    sub = diffs[:, cols]
    result = CategoryResult(
        data.category.name, _pole_names(data.category), data.orientation, len(data.pairs),
        _counts(data.pairs), data.rows[keep], data.signs[keep], st, spec, tier2, ci_low,
        ci_high, rst.dz, float(rand_pass.mean()) if rand_pass.size else 0.0,
        per_source_summary(diffs, kept, data.pairs, neutral[0], th),
        {c: i for i, c in enumerate(cols)},
        unit_stats(sub, replication_units(kept), th.min_unit_pairs, th.n_boot, th.seed),
        unit_stats(sub, source_units(kept), th.min_unit_pairs, th.n_boot, th.seed))
    _direction(result, diffs, data.stereo[keep], th)
    return result


def _pole_names(category: Category) -> tuple[str, str] | None:
    """The category's two pole names (for "higher on female terms" in the report)."""
    return None if category.poles is None else (category.poles[0].name, category.poles[1].name)


def _counts(pairs: Iterable[Pair]) -> dict[str, int]:
    """Pairs per source."""
    out: dict[str, int] = {}
    for p in pairs:
        out[p.source] = out.get(p.source, 0) + 1
    return out


def per_source_summary(diffs: np.ndarray, kept: Sequence[Pair], pairs: Sequence[Pair],
                       neutral_abs: np.ndarray, th: Thresholds) -> list[dict[str, Any]]:
    """Per source: pairs, oriented pairs, features passing the tier-2 rule on it alone."""
    total = _counts(pairs)
    out = []
    for unit in source_units(kept):
        d = diffs[unit.rows]
        alone = None
        max_dz = 0.0
        if unit.rows.size >= 3:
            st = paired_stats(d)
            alone = int(_passes(st, specificity_ratio(st.mean_abs, neutral_abs), th).sum())
            max_dz = float(np.abs(st.dz).max()) if st.dz.size else 0.0
        out.append({"source": unit.source, "n_pairs": total.get(unit.source, 0),
                    "n_oriented": int(unit.rows.size), "tier2_alone": alone,
                    "max_abs_dz": max_dz})
    for source, n in total.items():
        if not any(row["source"] == source for row in out):
            out.append({"source": source, "n_pairs": n, "n_oriented": 0, "tier2_alone": None,
                        "max_abs_dz": 0.0})
    return out


def _direction(result: CategoryResult, diffs: np.ndarray, stereo: np.ndarray,
               th: Thresholds) -> None:
    """Tier 3: oriented differences where pole a's sentence is the stereotype-consistent one,
    against those where pole b's is (both need MIN_CONTEXTS pairs)."""
    plus, minus = stereo > 0, stereo < 0
    result.n_plus, result.n_minus = int(plus.sum()), int(minus.sum())
    result.tier3 = np.zeros(diffs.shape[1], dtype=bool)
    if result.n_plus < MIN_CONTEXTS or result.n_minus < MIN_CONTEXTS:
        return
    ds = contrast_stats(diffs[plus], diffs[minus])
    result.dir_stats = ds
    result.tier3 = result.tier2 & (ds.q < th.q) & (ds.d >= th.effect)


def direction_label(result: CategoryResult, col: int, th: Thresholds) -> str:
    """Plain-words direction of a feature's response for the report."""
    ds = result.dir_stats
    if ds is None:
        return ("not assessed (needs stereotype-consistent and -inconsistent pairs for each "
                "group)")
    if ds.q[col] < th.q and ds.d[col] >= th.effect:
        return "stereotype-aligned"
    if ds.q[col] < th.q and ds.d[col] <= -th.effect:
        return "counter-stereotypical"
    return "no consistent direction"


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
# The whole evaluation


@dataclass
class Evaluation:
    """Tiers 1-3 of every audited feature: what flags and the report are made from."""

    thresholds: Thresholds
    feats: np.ndarray
    t1: Tier1
    results: list[CategoryResult]
    neutral_stats: PairedStats
    orientation: Orientation | None = None


def evaluate(pairs: Sequence[Pair], taxonomy: Taxonomy, acts: PairActivations,
             feats: np.ndarray, t1: Tier1, th: Thresholds) -> Evaluation:
    """Tier 2/3 for every taxonomy category with at least three oriented pairs."""
    cats = np.array([p.category for p in pairs])
    neutral = cats == NEUTRAL
    if not neutral.any():
        raise AuditError("no neutral-control pairs; include 'builtin' in the pairs spec")
    base = (neutral_scale(acts.diffs, pairs, neutral), neutral_scale(acts.rand, pairs, neutral))
    orient = orient_pairs(pairs, taxonomy)
    col = {int(f): j for j, f in enumerate(feats)}
    results = []
    for cat in taxonomy.categories:
        rows = np.flatnonzero(cats == cat.name)
        if int((orient.sign[rows] != 0).sum()) < 3:
            continue
        data = CategoryInput(cat, [pairs[int(i)] for i in rows], rows, acts.diffs[rows],
                             acts.rand[rows], orient.sign[rows], orient.stereo[rows],
                             orient.mode.get(cat.name, "poles"))
        labelled = [col[f] for f, c in t1 if c == cat.name and f in col]
        results.append(evaluate_category(data, base, th, labelled))
    return Evaluation(th, feats, t1, results, paired_stats(acts.diffs[neutral]), orient)
