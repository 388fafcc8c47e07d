"""Scores: which explanations a scorer already scored, storing a score with its floor, the best
explanation per feature, and score distributions for ``autolabel stats``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from autolabel.db import Explanation, Feature, SAERecord, Score
from autolabel.store.saes import find_sae


def scored_keys(session: Session, explanation_ids: Sequence[int], scorer: str,
                simulator: str) -> set[int]:
    """Explanation ids that already have this scorer's score."""
    return set(session.scalars(select(Score.explanation_id).where(
        Score.explanation_id.in_(list(explanation_ids)), Score.scorer == scorer,
        Score.simulator == simulator)))


def mark_best(session: Session, feature_ids: Sequence[int], scorer: str = "simulation") -> None:
    """Per feature, flag the explanation with the highest score of ``scorer`` as best."""
    for fid in feature_ids:
        rows = session.execute(select(Explanation, Score.value).join(
            Score, Score.explanation_id == Explanation.id).where(
            Explanation.feature_id == fid, Score.scorer == scorer, Score.value.is_not(None))
        ).all()
        if not rows:
            continue
        best = max(rows, key=lambda r: (r[1], -r[0].id))[0]
        for expl in session.scalars(select(Explanation).where(Explanation.feature_id == fid)):
            expl.is_best = expl.id == best.id


def score_stats(session: Session, sae_name: str | None = None) -> list[dict[str, Any]]:
    """Score distributions per (SAE, explainer, scorer, simulator), each with its floor."""
    query = (select(SAERecord.name, Explanation.explainer, Score.scorer, Score.simulator,
                    Score.value, Score.floor_value)
             .join(Explanation, Score.explanation_id == Explanation.id)
             .join(Feature, Explanation.feature_id == Feature.id)
             .join(SAERecord, Feature.sae_id == SAERecord.id))
    if sae_name:
        query = query.where(SAERecord.id == find_sae(session, sae_name).id)
    groups: dict[tuple[str, str, str, str], list[tuple[float | None, float | None]]] = {}
    for name, explainer, scorer, sim, value, floor in session.execute(query):
        groups.setdefault((name, explainer, scorer, sim), []).append((value, floor))
    return [_summarise(key, pairs) for key, pairs in sorted(groups.items())]


def _summarise(key: tuple[str, str, str, str],
               pairs: list[tuple[float | None, float | None]]) -> dict[str, Any]:
    """Mean/median/quartiles of values and floors, and how often a score beats its floor."""
    values = np.array([v for v, _ in pairs if v is not None], dtype=float)
    floors = np.array([f for _, f in pairs if f is not None], dtype=float)
    both = [(v, f) for v, f in pairs if v is not None and f is not None]

    def stat(arr: np.ndarray, fn: Any) -> float | None:
        return float(fn(arr)) if arr.size else None

    return {
        "sae": key[0], "explainer": key[1], "scorer": key[2], "simulator": key[3],
        "n": len(pairs), "n_valid": int(values.size),
        "mean": stat(values, np.mean), "median": stat(values, np.median),
        "p25": stat(values, lambda a: np.percentile(a, 25)),
        "p75": stat(values, lambda a: np.percentile(a, 75)),
        "floor_mean": stat(floors, np.mean),
        "above_floor": (sum(v > f for v, f in both) / len(both)) if both else None,
    }


def add_score(session: Session, *, explanation_id: int, scorer: str, simulator: str,
              value: float | None, floor_value: float | None, floor_explanation_id: int | None,
              n_examples: int, status: str, details: dict[str, Any],
              run_id: int | None) -> None:
    """One score row with its floor; failures are statuses with the details kept."""
    session.add(Score(
        explanation_id=explanation_id, scorer=scorer, simulator=simulator, value=value,
        floor_value=floor_value, floor_explanation_id=floor_explanation_id,
        n_examples=n_examples, status=status, details=details, run_id=run_id))
