"""The one definition of "a feature's label": what lists, search, exports and the audit show.

A feature's label is its best *gate-passed* candidate (explanation status ``ok``), chosen by
the **validation** score of one scorer, and reported with its **test** score, that score's
floor, null 95th percentile, bootstrap CI and verdict (issue 13). The choice never looks at
test scores, so the reported number is not the maximum of k noisy estimates.

- Scores made before the validation split existed have no validation value; the choice then
  falls back to the test score, and the label says so: ``selected_on = "test"``. Scores made
  with a validation split never fall back to test: when no candidate has a defined validation
  value, the oldest candidate is the label (``selected_on = ""``).
- A feature whose candidates were all rejected by the quality gate has ``text=None`` and
  verdict ``rejected``: a rejected candidate's text is never a label.
- A feature with ok candidates but no usable score is ``unscored`` (text of the candidate
  marked best, else its first ok candidate).

:func:`choose` is also what the score stage uses to set ``is_best``, so the flag and the API
can never disagree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from autolabel.db import Explanation, Score

VERDICTS = ("trusted", "weak", "at_floor", "rejected", "unscored")
SCORE_VERDICTS = ("trusted", "weak", "at_floor", "unscored")  # what a score row can carry
OK_STATUS, REJECTED_STATUS = "ok", "rejected"


@dataclass(frozen=True)
class Label:
    """A feature's label with everything a reader needs to decide whether to trust it."""

    feature_id: int
    explanation_id: int | None  # None when no candidate passed the gate
    text: str | None  # never a rejected candidate's text
    explainer: str | None
    llm_model: str | None
    scorer: str
    simulator: str
    score: float | None  # test-split score of the chosen label
    floor: float | None
    null_p95: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: str  # one of VERDICTS
    selected_on: str  # "validation" | "test" (legacy: chosen on the test split) | ""
    validation_score: float | None = None  # what the choice was made on

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``--json`` output, exports)."""
        return dataclasses.asdict(self)

    @property
    def trusted(self) -> bool:
        """Whether the verdict is ``trusted`` (CI above the null's 95th percentile)."""
        return self.verdict == "trusted"


class CandidateRow(NamedTuple):
    """An explanation's label columns, read as a plain row: building ORM objects was half of
    a warm server's search time (identity map, attribute instrumentation)."""

    id: int
    feature_id: int
    text: str | None
    explainer: str
    llm_model: str
    status: str
    is_best: bool


class ScoreRow(NamedTuple):
    """A score's label columns, read as a plain row (see :class:`CandidateRow`)."""

    simulator: str
    value: float | None
    validation_value: float | None
    floor_value: float | None
    null_p95: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: str | None
    details: dict[str, Any]


_CANDIDATE_COLUMNS = tuple(getattr(Explanation, f) for f in CandidateRow._fields)
_SCORE_COLUMNS = tuple(getattr(Score, f) for f in ScoreRow._fields)


def choose(rows: Sequence[tuple[CandidateRow, ScoreRow]]
           ) -> tuple[CandidateRow, ScoreRow, str] | None:
    """The chosen (explanation, score, selected_on) among one feature's scored candidates.

    Only ok explanations with an ok score count. With validation values the highest one wins
    ("validation"). Scored on a collection with a validation split but without any defined
    validation value (the feature never fired in its validation windows), no score may choose:
    the oldest candidate is taken, ``selected_on = ""``. Only legacy scores (made before the
    split existed) fall back to the highest test value ("test"). Ties go to the older
    candidate, so the choice is reproducible.
    """
    usable = [(e, s) for e, s in rows if e.status == OK_STATUS and s.value is not None]
    with_val = [(e, s) for e, s in usable if s.validation_value is not None]
    if with_val:
        e, s = max(with_val, key=lambda r: (r[1].validation_value, -r[0].id))
        return e, s, "validation"
    if any(had_validation_split(s) for _e, s in usable):
        e, s = min(usable, key=lambda r: r[0].id)
        return e, s, ""
    if usable:
        e, s = max(usable, key=lambda r: (r[1].value, -r[0].id))
        return e, s, "test"
    return None


def had_validation_split(score: ScoreRow) -> bool:
    """Whether ``score`` was made on a collection with validation examples (the score stage
    then keeps the validation result in ``details``, even when its value is undefined)."""
    return (score.details or {}).get("validation") is not None


def scored_rows(session: Session, feature_ids: Sequence[int],
                scorer: str) -> dict[int, list[tuple[CandidateRow, ScoreRow]]]:
    """Per feature, its explanations' ``scorer`` scores under the simulator used last.

    A database can hold one scorer's scores under two simulators (an embedding run, then an
    LLM run); mixing them would compare numbers on different scales, so per feature only the
    simulator of the newest score row counts.
    """
    out: dict[int, list[tuple[CandidateRow, ScoreRow]]] = {}
    # Scores are found through their explanations (the unique (explanation_id, scorer, ...)
    # index): with the feature filter on the joined table, SQLite scanned every score of the
    # scorer instead (26 ms per search at 50k scores, growing with the table). Only the
    # columns a label reads are selected (explanations' settings JSON never is).
    of_features = select(Explanation.id).where(Explanation.feature_id.in_(list(feature_ids)))
    query = (select(*_CANDIDATE_COLUMNS, *_SCORE_COLUMNS)
             .join(Score, Score.explanation_id == Explanation.id)
             .where(Score.explanation_id.in_(of_features.scalar_subquery()),
                    Score.scorer == scorer)
             .order_by(Explanation.feature_id, Score.id))
    width = len(CandidateRow._fields)
    for row in session.execute(query).tuples():
        expl = CandidateRow(*row[:width])
        out.setdefault(expl.feature_id, []).append((expl, ScoreRow(*row[width:])))
    for fid, rows in out.items():
        latest = rows[-1][1].simulator
        out[fid] = [(e, s) for e, s in rows if s.simulator == latest]
    return out


def feature_labels(session: Session, feature_ids: Sequence[int],
                   scorer: str = "simulation") -> dict[int, Label]:
    """The label of every feature in ``feature_ids`` (each gets one, even if unscored)."""
    ids = list(dict.fromkeys(feature_ids))
    scored = scored_rows(session, ids, scorer)
    candidates: dict[int, list[CandidateRow]] = {}
    query = (select(*_CANDIDATE_COLUMNS).where(Explanation.feature_id.in_(ids))
             .order_by(Explanation.id))
    for row in session.execute(query).tuples():
        expl = CandidateRow(*row)
        candidates.setdefault(expl.feature_id, []).append(expl)
    return {fid: _label(fid, candidates.get(fid, []), scored.get(fid, []), scorer)
            for fid in ids}


def _label(fid: int, candidates: Sequence[CandidateRow],
           rows: Sequence[tuple[CandidateRow, ScoreRow]], scorer: str) -> Label:
    """One feature's label from its candidates and scored rows."""
    chosen = choose(rows)
    if chosen is not None:
        expl, score, selected_on = chosen
        return Label(fid, expl.id, expl.text, expl.explainer, expl.llm_model, scorer,
                     score.simulator, score.value, score.floor_value, score.null_p95,
                     score.ci_low, score.ci_high, score.verdict or "unscored", selected_on,
                     score.validation_value)
    ok = [e for e in candidates if e.status == OK_STATUS]
    if ok:
        expl = next((e for e in ok if e.is_best), ok[0])
        simulator = rows[-1][1].simulator if rows else ""
        return Label(fid, expl.id, expl.text, expl.explainer, expl.llm_model, scorer,
                     simulator, None, None, None, None, None, "unscored", "")
    verdict = "rejected" if any(e.status == REJECTED_STATUS for e in candidates) else "unscored"
    return Label(fid, None, None, None, None, scorer, "", None, None, None, None, None,
                 verdict, "")


def trusted_share(labels: Sequence[Label]) -> float | None:
    """Fraction of ``labels`` whose verdict is trusted (None for no labels)."""
    return sum(lab.trusted for lab in labels) / len(labels) if labels else None
