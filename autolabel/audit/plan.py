"""What an audit covers and what its expensive part found: the records report facts and cards
are built from (:mod:`~autolabel.audit.facts`, :mod:`~autolabel.audit.cards`).

The :class:`AuditPlan` is decided from config and database alone, before any model loads; the
:class:`AuditOutcome` holds the forward passes, statistics and flags with the models that
produced them (the cards shade tokens with them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autolabel.audit.activations import PairActivations
from autolabel.audit.evaluate import Evaluation, Thresholds
from autolabel.audit.pairs import Pair, PairSource
from autolabel.audit.taxonomy import Taxonomy
from autolabel.config import Config
from autolabel.store.audits import AuditedSAE

EVIDENCE_VERDICTS = ("trusted", "weak")  # the only label verdicts tier 1 may use

SEVERITY_ACTIONS = {
    "critical": "Block release of decisions that use this feature; investigate and mitigate "
                "(ablate or steer the feature) before sign-off.",
    "high": "Investigate before release: inspect contexts, test downstream impact, document "
            "a mitigation or a justification.",
    "medium": "The feature reacts to demographic terms, but its label does not say so (or "
              "the effect holds in one template family or source only): relabel or test it on "
              "more pairs, then review its downstream use.",
    "review": "Label mentions a protected category but activations show no measurable "
              "demographic sensitivity: confirm the label; no action unless the feature is used.",
}


@dataclass
class AuditPlan:
    """What an audit covers and its key, decided from config and database alone (no model)."""

    config: Config
    config_hash: str
    key: str
    taxonomy: Taxonomy
    thresholds: Thresholds
    spec: str
    pairs: list[Pair]
    sources: list[PairSource]
    sae: AuditedSAE
    feats: np.ndarray
    labels: dict[int, dict[str, Any]]
    argv: list[str]


@dataclass
class AuditOutcome:
    """What the expensive part found, with the models that produced it (for the cards)."""

    subject: Any
    sae: Any
    activations: PairActivations
    evaluation: Evaluation
    flags: list[dict[str, Any]]
    timings: dict[str, float]
    corpus: dict[int, list[tuple[Any, Any, float]]] = field(default_factory=dict)
