"""Replication: per-unit d_z with CIs, the replication verdict, and the severity cap for a flag
that one template family alone produces."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.audit.activations import PairActivations
from autolabel.audit.evaluate import Thresholds, evaluate
from autolabel.audit.flags import flag_rows, severity
from autolabel.audit.pairs import NEUTRAL, builtin_pairs
from autolabel.audit.replication import (
    NOT_REPLICATED,
    REPLICATED,
    SINGLE,
    SOURCE_SPECIFIC,
    TEMPLATE_SPECIFIC,
    Unit,
    UnitStats,
    holm,
    status,
)
from autolabel.audit.taxonomy import load_taxonomy

TH = Thresholds(effect=0.3, n_boot=300, n_random=4)


def _unit(kind: str) -> UnitStats:
    return UnitStats(Unit("u", kind, "builtin" if kind == "family" else "crows",
                          np.arange(6)), True, np.ones(1), np.ones(1), np.ones(1))


def test_status_rule() -> None:
    fam, src = _unit("family"), _unit("source")
    assert status(1, [fam]) == SINGLE
    assert status(5, [fam, src]) == REPLICATED
    assert status(5, [fam]) == TEMPLATE_SPECIFIC
    assert status(3, [src]) == SOURCE_SPECIFIC
    assert status(4, []) == NOT_REPLICATED


def test_holm_step_down() -> None:
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([]) == []


def test_severity_cap() -> None:
    assert severity({1, 2, 3}) == "critical" and severity({1, 2, 3}, capped=True) == "medium"
    assert severity({1, 2}, capped=True) == "medium" and severity({2}, capped=True) == "medium"
    assert severity({1}, capped=True) == "review"


def _evaluate(values: dict[str, float], seed: int = 0) -> list[dict]:
    """Religion pairs whose feature-0 difference is large in one template family only."""
    pairs = [p for p in builtin_pairs() if p.category in ("religion", NEUTRAL)]
    rng = np.random.default_rng(seed)
    diffs = np.zeros((len(pairs), 2))
    for i, p in enumerate(pairs):
        if p.category == "religion":
            mean = values.get(p.family or "", values["*"])
            diffs[i, 0] = mean + rng.normal(0, 0.05 if mean > 5 else 1.0)
            diffs[i, 1] = rng.normal(0, 1.0)
    acts = PairActivations([], [], np.zeros((2 * len(pairs), 2)), diffs,
                           rng.normal(0, 1, size=(len(pairs), 4)))
    tax = load_taxonomy()
    t1 = {(0, "religion"): {"explanation": "Muslim", "lexicon": ["muslim"], "similarity": None,
                            "threshold": 0.3}}
    return flag_rows(evaluate(pairs, tax, acts, np.array([0, 1]), t1, TH))


def test_one_family_only_is_template_specific_and_capped() -> None:
    family = "We met a {X} student at the library."
    flags = {(f["feature"], f["tier"]): f for f in _evaluate({family: 10.0, "*": 0.0})}
    tier2 = flags[(0, 2)]
    rep = tier2["replication"]
    assert rep["status"] == TEMPLATE_SPECIFIC and rep["n_replicated"] == 1
    assert rep["n_tested"] == 8 and tier2["template_specific"]
    assert [u["unit"] for u in rep["units"] if u["replicates"]] == [f"builtin: {family}"]
    assert tier2["severity"] == "medium"  # tiers 1+2 would be high; one template is not enough
    assert tier2["evidence"]["replication"] == rep
    assert flags[(0, 1)]["severity"] == "medium" and flags[(0, 1)]["replication"] == rep
    assert all(u["ci95_dz"] is not None for u in rep["units"] + rep["by_source"])


def test_effect_in_every_family_replicates() -> None:
    flags = {(f["feature"], f["tier"]): f for f in _evaluate({"*": 3.0})}
    rep = flags[(0, 2)]["replication"]
    assert rep["status"] == REPLICATED and rep["n_replicated"] == 8
    assert flags[(0, 2)]["severity"] == "high" and not flags[(0, 2)]["template_specific"]
