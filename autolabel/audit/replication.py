"""Does a tier-2 effect hold beyond the pair set that produced it?

A **unit** is one template family of the built-in pairs (all pairs made from one sentence
template) or one whole external pair source (CrowS-Pairs, WinoBias, a user file). On each unit
that tests a category with at least ``min_unit_pairs`` oriented pairs, a feature's oriented d_z
gets its own bootstrap 95% CI (reported) and a one-sided paired t-test in the direction of the
pooled effect. The rule:

- a unit **replicates** the effect when its one-sided p, Holm-corrected over the units that
  test the category, is below ``alpha`` (the audit's q threshold). A template family holds 6-12
  pairs, where a percentile bootstrap CI is too narrow to decide on (a null family "excludes 0"
  about one time in seven), and with eight families some would replicate by chance alone; the
  Holm correction keeps the chance that any null unit counts at ``alpha``;
- ``replicated``: at least two units replicate;
- ``template-specific``: exactly one unit replicates and it is a built-in template family;
- ``source-specific``: exactly one unit replicates and it is a whole external source;
- ``not-replicated``: no single unit replicates (only the pooled test holds);
- ``single-unit``: only one unit tests the category, so replication cannot be judged.

Template-specific, source-specific and not-replicated effects are capped at *medium* severity:
a flag that one sentence frame produces is not high or critical on its own. Per-source d_z
(each source as a whole, built-ins included) is reported beside the units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autolabel.audit.pairs import Pair
from autolabel.audit.stats import bootstrap_dz_ci, effect_size, paired_t_p

MIN_UNIT_PAIRS = 5
REPLICATED, SINGLE = "replicated", "single-unit"
TEMPLATE_SPECIFIC, SOURCE_SPECIFIC, NOT_REPLICATED = (
    "template-specific", "source-specific", "not-replicated")
CAPPED = {TEMPLATE_SPECIFIC, SOURCE_SPECIFIC, NOT_REPLICATED}  # at most medium severity


@dataclass(frozen=True)
class Unit:
    """A group of one category's oriented pairs: a built-in template family or a source."""

    name: str
    kind: str  # "family" | "source"
    source: str
    rows: np.ndarray  # positions among the category's oriented pairs


def replication_units(pairs: Sequence[Pair]) -> list[Unit]:
    """Built-in pairs split by template family; every other source is one unit."""
    return _group(pairs, lambda p: (f"builtin: {p.family}", "family") if (
        p.source == "builtin" and p.family) else (p.source, "source"))


def source_units(pairs: Sequence[Pair]) -> list[Unit]:
    """One unit per pair source (built-ins as a whole), for the per-source statistics."""
    return _group(pairs, lambda p: (p.source, "source"))


def _group(pairs: Sequence[Pair], key: Any) -> list[Unit]:
    """Units in first-seen order."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, p in enumerate(pairs):
        name, kind = key(p)
        groups.setdefault((name, kind, p.source), []).append(i)
    return [Unit(n, k, s, np.asarray(r, dtype=np.int64)) for (n, k, s), r in groups.items()]


@dataclass
class UnitStats:
    """d_z, its bootstrap CI, the mean and the two-sided t p for chosen columns on one unit."""

    unit: Unit
    tested: bool
    dz: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    mean: np.ndarray | None = None
    p_two_sided: np.ndarray | None = None


def unit_stats(diffs: np.ndarray, units: Sequence[Unit], min_pairs: int, n_boot: int,
               seed: int) -> list[UnitStats]:
    """Per unit, d_z of every column of ``diffs`` (oriented, ``[n, F']``) and its CI."""
    out = []
    for unit in units:
        d = diffs[unit.rows]
        tested = unit.rows.size >= max(min_pairs, 2)
        dz = effect_size(d) if unit.rows.size > 1 else np.zeros(diffs.shape[1])
        if tested:
            lo, hi = bootstrap_dz_ci(d, n_boot, seed)
        else:
            lo = hi = np.full(diffs.shape[1], np.nan)
        out.append(UnitStats(unit, tested, dz, lo, hi, d.mean(0) if unit.rows.size else None,
                             paired_t_p(d) if tested else None))
    return out


def one_sided_p(st: UnitStats, k: int, sign: float) -> float:
    """One-sided paired t p of column ``k`` in the direction ``sign`` (1 when untested)."""
    if not st.tested or sign == 0 or st.p_two_sided is None or st.mean is None:
        return 1.0
    p = float(st.p_two_sided[k])
    return p / 2 if np.sign(st.mean[k]) == sign else 1 - p / 2


def holm(p: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error control), in input order."""
    order = np.argsort(p, kind="stable")
    adjusted, running = [1.0] * len(p), 0.0
    for rank, i in enumerate(order.tolist()):
        running = max(running, min(1.0, (len(p) - rank) * float(p[i])))
        adjusted[i] = running
    return adjusted


def status(tested: int, replicating: Sequence[UnitStats]) -> str:
    """The replication verdict from the counts (rule in the module docstring)."""
    if tested <= 1:
        return SINGLE
    if len(replicating) >= 2:
        return REPLICATED
    if len(replicating) == 1:
        return TEMPLATE_SPECIFIC if replicating[0].unit.kind == "family" else SOURCE_SPECIFIC
    return NOT_REPLICATED


def _holds(units: Sequence[UnitStats], k: int, sign: float,
           alpha: float) -> tuple[list[float], list[float], list[bool]]:
    """Per unit: one-sided p, Holm-adjusted p (over the tested units), replicates or not."""
    raw = [one_sided_p(u, k, sign) for u in units]
    tested = [i for i, u in enumerate(units) if u.tested]
    adjusted = [1.0] * len(units)
    for i, a in zip(tested, holm([raw[i] for i in tested]), strict=True):
        adjusted[i] = a
    return raw, adjusted, [u.tested and a < alpha for u, a in zip(units, adjusted, strict=True)]


def replication(units: Sequence[UnitStats], sources: Sequence[UnitStats], k: int,
                pooled_dz: float, alpha: float = 0.05) -> dict[str, Any]:
    """One feature's replication record for the flag's evidence and the report's card."""
    sign = float(np.sign(pooled_dz))
    raw, adj, holds = _holds(units, k, sign, alpha)
    reps = [u for u, h in zip(units, holds, strict=True) if h]
    verdict = status(sum(u.tested for u in units), reps)
    s_raw, s_adj, s_holds = _holds(sources, k, sign, alpha)
    return {"status": verdict, "n_tested": sum(u.tested for u in units),
            "n_replicated": len(reps), "alpha": alpha,
            "template_specific": verdict == TEMPLATE_SPECIFIC, "capped": verdict in CAPPED,
            "units": [_row(*r, k) for r in zip(units, raw, adj, holds, strict=True)],
            "by_source": [_row(*r, k) for r in zip(sources, s_raw, s_adj, s_holds,
                                                   strict=True)]}


def _row(st: UnitStats, p: float, p_holm: float, holds: bool, k: int) -> dict[str, Any]:
    """One unit's numbers for the report."""
    ci = [float(st.ci_low[k]), float(st.ci_high[k])] if st.tested else None
    return {"unit": st.unit.name, "kind": st.unit.kind, "source": st.unit.source,
            "n_pairs": int(st.unit.rows.size), "tested": st.tested, "d_z": float(st.dz[k]),
            "ci95_dz": ci, "p_one_sided": p if st.tested else None,
            "p_holm": p_holm if st.tested else None, "replicates": holds}
