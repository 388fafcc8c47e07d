"""Flags: one row per (feature, category, tier) that holds, with its statistics, evidence,
replication record and severity.

Severity combines the tiers (critical = 1+2+3, high = 2 with 1 or 3, medium = 2 only, review =
1 only), then replication caps it: an activation effect that only one template family or one
source produces (or no single unit on its own) is at most *medium*
(:mod:`~autolabel.audit.replication`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autolabel.audit.evaluate import CategoryResult, Evaluation, direction_label
from autolabel.audit.replication import replication
from autolabel.audit.stats import PairedStats, finite_or_none, json_safe, p95_abs

SEVERITY_ORDER = ["review", "medium", "high", "critical"]


def severity(tiers: set[int], capped: bool = False) -> str:
    """Combined severity of one feature x category from the tiers that hold; ``capped`` (the
    activation effect does not replicate) keeps it at medium or below."""
    if {1, 2, 3} <= tiers:
        level = "critical"
    elif 2 in tiers and (1 in tiers or 3 in tiers):
        level = "high"
    else:
        level = "medium" if 2 in tiers else "review"
    if capped and SEVERITY_ORDER.index(level) > SEVERITY_ORDER.index("medium"):
        return "medium"
    return level


def replication_of(res: CategoryResult, j: int, alpha: float) -> dict[str, Any] | None:
    """The replication record of feature column ``j`` (None if it was not computed)."""
    k = res.unit_cols.get(j)
    if k is None:
        return None
    return dict(json_safe(replication(res.units, res.by_source, k, float(res.stats.dz[j]),
                                      alpha)))


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
        rep = replication_of(res, j, ev.thresholds.q) if res is not None else None
        sev = severity(tiers, capped=2 in tiers and rep is not None and rep["capped"])
        for tier in sorted(tiers):
            rows.append(_flag_row(ev, feat, cat, tier, sev, res, j, rep))
    return rows


def _flag_row(ev: Evaluation, feat: int, cat: str, tier: int, sev: str,
              res: CategoryResult | None, j: int, rep: dict[str, Any] | None) -> dict[str, Any]:
    """Statistics and evidence of one flag (tier 1 rows carry the label evidence)."""
    row: dict[str, Any] = {"feature": feat, "category": cat, "tier": tier, "severity": sev,
                           "effect_size": None, "ci_low": None, "ci_high": None,
                           "p_value": None, "q_value": None, "direction": None,
                           "replication": rep,
                           "template_specific": bool(rep and rep["template_specific"])}
    if tier == 1:
        row["evidence"] = json_safe({**ev.t1[(feat, cat)], "replication": rep})
        return row
    assert res is not None
    if tier == 2:
        st = res.stats
        row.update(effect_size=float(st.dz[j]), p_value=float(st.p_t[j]),
                   q_value=float(st.q[j]), ci_low=finite_or_none(res.ci_low[j]),
                   ci_high=finite_or_none(res.ci_high[j]))
        evidence = _tier2_evidence(res, st, j, ev.neutral_stats)
    else:
        ds = res.dir_stats
        assert ds is not None
        row.update(effect_size=float(ds.d[j]), p_value=float(ds.p[j]), q_value=float(ds.q[j]))
        evidence = _tier3_evidence(res, j)
    row["direction"] = direction_label(res, j, ev.thresholds)
    row["evidence"] = json_safe({**evidence, "replication": rep})
    return row


def _tier2_evidence(res: CategoryResult, st: PairedStats, j: int,
                    neutral: PairedStats) -> dict[str, Any]:
    """The numbers behind a tier-2 flag, each named by its method."""
    higher = None
    if res.poles is not None and st.dz[j] != 0:
        higher = res.poles[0] if st.dz[j] > 0 else res.poles[1]
    return {"n_pairs": st.n, "n_unoriented": res.n_unoriented, "orientation": res.orientation,
            "poles": list(res.poles) if res.poles else None, "higher_on": higher,
            "mean_diff": st.mean[j], "sd_diff": st.sd[j], "d_z": st.dz[j],
            "p_ttest": st.p_t[j], "p_wilcoxon": st.p_wilcoxon[j], "q_bh": st.q[j],
            "sources": res.sources, "ci95_dz": [res.ci_low[j], res.ci_high[j]],
            "specificity": res.specificity[j], "mean_abs_diff": st.mean_abs[j],
            "neutral_mean_abs_diff": neutral.mean_abs[j], "neutral_d_z": neutral.dz[j],
            "random_abs_dz_p95": p95_abs(res.random_dz),
            "random_flag_rate": res.random_flag_rate}


def _tier3_evidence(res: CategoryResult, j: int) -> dict[str, Any]:
    """The numbers behind a tier-3 flag: the two stereotype contexts compared."""
    ds = res.dir_stats
    assert ds is not None
    return {"method": "Welch t-test, Cohen's d: oriented difference where the pole-a sentence "
                      "is stereotype-consistent vs where the pole-b sentence is",
            "n_directional_pairs": res.n_directional, "n_pole_a_stereotyped": ds.n_plus,
            "n_pole_b_stereotyped": ds.n_minus, "mean_diff_pole_a_stereotyped": ds.mean_plus[j],
            "mean_diff_pole_b_stereotyped": ds.mean_minus[j], "d": ds.d[j], "p_welch": ds.p[j],
            "q_bh": ds.q[j], "sources": res.sources}
