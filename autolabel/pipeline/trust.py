"""Trust for scores made before the verdict existed: null, CI and verdict from what is stored.

A score row made before migration 0009 keeps its per-token predictions in ``details`` and its
truths are the feature's stored test examples, so its null distribution, bootstrap CI and
verdict can be computed now, exactly as the score stage computes them for new scores, without
calling any LLM or loading any model. Its validation value stays empty: such a collection had
no validation split, and its labels say "selected on test".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from autolabel.config import Config
from autolabel.db import Database, Explanation, Score
from autolabel.scoring.metrics import normalise_truth
from autolabel.scoring.trust import RULE, UNSCORED, Trust, TrustSettings, assess
from autolabel.store.features import load_examples
from autolabel.store.scores import set_trust, untrusted_scores

Pairs = tuple[list[np.ndarray], list[np.ndarray], str]  # truth, predictions, metric name


def trust_settings(config: Config) -> TrustSettings:
    """The verdict rule's parameters from ``[scoring]``."""
    s = config.scoring
    return TrustSettings(alpha=s.verdict_alpha, n_null=s.n_null, n_boot=s.n_boot, seed=s.seed)


def backfill_trust(database: Database, feature_ids: Sequence[int],
                   settings: TrustSettings) -> int:
    """Give every verdict-less score row of these features its trust columns; returns how
    many rows were filled in. One transaction for all (a few queries when none is left)."""
    with database.session() as session:
        rows = untrusted_scores(session, feature_ids)
        truths: dict[tuple[int, float], list[np.ndarray]] = {}
        for row in rows:
            trust = _trust_of(session, row, truths, settings)
            set_trust(row, trust.as_dict())
            row.details = {**(row.details or {}), "trust": {
                **trust.as_dict(), "rule": RULE, **dataclasses.asdict(settings),
                "backfilled": True}}
        return len(rows)


def _trust_of(session: Any, row: Score, truths: dict[tuple[int, float], list[np.ndarray]],
              settings: TrustSettings) -> Trust:
    """The trust of one stored score (``unscored`` when its inputs cannot be recovered)."""
    if row.status != "ok" or row.value is None:
        return UNSCORED
    pairs = _stored_pairs(session, row, truths)
    if pairs is None:
        return UNSCORED
    return assess(pairs[0], pairs[1], row.value, row.floor_value, pairs[2], settings)


def _stored_pairs(session: Any, row: Score,
                  truths: dict[tuple[int, float], list[np.ndarray]]) -> Pairs | None:
    """(truth, predictions, metric) as the scorer saw them, from the row and its examples."""
    details = row.details or {}
    if "labels" in details and "guesses" in details:  # detection / fuzzing
        return ([np.array([float(y)]) for y in details["labels"]],
                [np.array([float(g)]) for g in details["guesses"]], "balanced_accuracy")
    preds, scale = details.get("predictions"), details.get("scale")
    if not isinstance(preds, list) or scale is None:
        return None
    expl = session.get(Explanation, row.explanation_id)
    key = (expl.feature_id, float(scale))
    if key not in truths:
        examples = [e for e in load_examples(session, expl.feature_id, split="test")
                    if len(e.token_ids)]
        truths[key] = [normalise_truth(e.activations, float(scale)) for e in examples]
    truth = truths[key]
    arrays = [np.asarray(p, dtype=np.float64) for p in preds]
    if [len(t) for t in truth] != [len(p) for p in arrays]:
        return None  # re-collected since: these predictions belong to other windows
    return truth, arrays, "pooled_pearson"
