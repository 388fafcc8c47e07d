"""Scores: which explanations a scorer already scored, storing a score with its floor, null
summary, CI and verdict, the best explanation per feature (chosen on validation), and score
distributions and trusted shares for ``autolabel stats``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from autolabel.db import Explanation, Feature, SAERecord, Score
from autolabel.store.labels import Label, choose, feature_labels, scored_rows
from autolabel.store.saes import find_sae

TRUST_COLUMNS = ("null_mean", "null_p95", "null_n", "ci_low", "ci_high", "verdict")


RETRYABLE_STATUSES = ("error",)  # an outage, not a result: the next run scores it again


def scored_keys(session: Session, explanation_ids: Sequence[int], scorer: str,
                simulator: str) -> set[int]:
    """Explanation ids that already have this scorer's score (an outage's ``error`` row does
    not count: it is retried)."""
    return set(session.scalars(select(Score.explanation_id).where(
        Score.explanation_id.in_(list(explanation_ids)), Score.scorer == scorer,
        Score.simulator == simulator, Score.status.not_in(RETRYABLE_STATUSES))))


def mark_best(session: Session, feature_ids: Sequence[int], scorer: str = "simulation") -> None:
    """Per feature, flag the label :func:`~autolabel.store.labels.choose` picks (by validation
    score, never test) as best; a feature with no usable score keeps no best."""
    rows = scored_rows(session, feature_ids, scorer)
    for fid in feature_ids:
        chosen = choose(rows.get(fid, []))
        best_id = chosen[0].id if chosen is not None else None
        for expl in session.scalars(select(Explanation).where(Explanation.feature_id == fid)):
            expl.is_best = expl.id == best_id


def score_stats(session: Session, sae_name: str | None = None) -> list[dict[str, Any]]:
    """Score distributions per (SAE, explainer, scorer, simulator), each with its floor, its
    verdict counts, and how many features' labels come from it and are trusted."""
    query = (select(SAERecord.name, Explanation.explainer, Score.scorer, Score.simulator,
                    Score.value, Score.floor_value, Score.verdict, Explanation.id,
                    Explanation.feature_id)
             .join(Explanation, Score.explanation_id == Explanation.id)
             .join(Feature, Explanation.feature_id == Feature.id)
             .join(SAERecord, Feature.sae_id == SAERecord.id))
    if sae_name:
        query = query.where(SAERecord.id == find_sae(session, sae_name).id)
    groups: dict[tuple[str, str, str, str], list[tuple[Any, ...]]] = {}
    for name, explainer, scorer, sim, value, floor, verdict, eid, fid in session.execute(query):
        groups.setdefault((name, explainer, scorer, sim), []).append(
            (value, floor, verdict, eid, fid))
    chosen = _chosen_labels(session, groups)
    return [{**_summarise(key, [(v, f) for v, f, *_ in rows]),
             **_trust_counts(key, rows, chosen)} for key, rows in sorted(groups.items())]


def _chosen_labels(session: Session, groups: Mapping[tuple[str, str, str, str], Any]
                   ) -> dict[tuple[str, int], Label]:
    """(scorer, feature id) -> the feature's label under that scorer."""
    out: dict[tuple[str, int], Label] = {}
    for scorer in {key[2] for key in groups}:
        fids = sorted({row[4] for key, rows in groups.items() if key[2] == scorer
                       for row in rows})
        out.update({(scorer, fid): lab for fid, lab in
                    feature_labels(session, fids, scorer).items()})
    return out


def _trust_counts(key: tuple[str, str, str, str], rows: list[tuple[Any, ...]],
                  chosen: Mapping[tuple[str, int], Label]) -> dict[str, Any]:
    """Verdict counts of a group's scores; its labels (features whose chosen candidate is in
    the group) and how many of them are trusted."""
    verdicts: dict[str, int] = {}
    for _v, _f, verdict, _e, _fid in rows:
        verdicts[verdict or "unscored"] = verdicts.get(verdict or "unscored", 0) + 1
    ids = {row[3] for row in rows}
    labels = [lab for (scorer, fid), lab in chosen.items() if scorer == key[2]
              and lab.explanation_id in ids and lab.simulator == key[3]]
    return {"verdicts": verdicts,
            "trusted": verdicts.get("trusted", 0) / len(rows) if rows else None,
            "labels": len(labels), "labels_trusted": sum(lab.trusted for lab in labels),
            "labels_selected_on_test": sum(lab.selected_on == "test" for lab in labels)}


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
              n_examples: int, status: str, details: dict[str, Any], run_id: int | None,
              validation_value: float | None = None,
              trust: Mapping[str, Any] | None = None) -> None:
    """One score row with its floor, validation value and trust columns (``trust``: null_mean,
    null_p95, null_n, ci_low, ci_high, verdict). A retried outage row is updated in place."""
    row = session.scalar(select(Score).where(
        Score.explanation_id == explanation_id, Score.scorer == scorer,
        Score.simulator == simulator)) or Score(explanation_id=explanation_id, scorer=scorer,
                                                simulator=simulator)
    row.value, row.floor_value, row.floor_explanation_id = value, floor_value, floor_explanation_id
    row.n_examples, row.status, row.details, row.run_id = n_examples, status, details, run_id
    row.validation_value = validation_value
    set_trust(row, trust or {})
    session.add(row)


def set_trust(row: Score, trust: Mapping[str, Any]) -> None:
    """Copy a trust summary onto a score row (missing keys become NULL)."""
    for key in TRUST_COLUMNS:
        setattr(row, key, trust.get(key))


def untrusted_scores(session: Session, feature_ids: Sequence[int]) -> list[Score]:
    """Score rows of these features without a verdict: made before migration 0009; the score
    stage fills their verdict in from stored predictions (no LLM call)."""
    return list(session.scalars(select(Score).join(
        Explanation, Score.explanation_id == Explanation.id).where(
        Explanation.feature_id.in_(list(feature_ids)), Score.verdict.is_(None))
        .order_by(Score.id)))
