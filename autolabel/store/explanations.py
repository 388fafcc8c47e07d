"""Explanation candidates: what exists per explainer identity, what is ok, and storing new ones.

A candidate's identity is (feature, explainer, LLM model, prompt hash, candidate number), so a
re-run finds what it already stored and only re-asks for missing or retryable candidates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from autolabel.db import Explanation, Score


class CandidateLike(Protocol):
    """One explanation candidate as produced by an explainer (``explain.Candidate`` fits)."""

    explainer: str
    text: str | None
    status: str
    error: str | None
    raw_reply: str | None
    llm_model: str
    prompt_hash: str
    candidate: int
    call_id: int | None
    settings: dict[str, Any]
    reason: str | None  # the quality gate's reason code when rejected (issue 13)
    gate_version: int | None  # the gate that judged it (None: not judged)


def existing_explanations(session: Session, feature_ids: Sequence[int], explainer: str,
                          llm_model: str, prompt_hash: str) -> dict[tuple[int, int], Any]:
    """(feature id, candidate) -> Explanation row for one explainer identity."""
    rows = session.scalars(select(Explanation).where(
        Explanation.feature_id.in_(list(feature_ids)), Explanation.explainer == explainer,
        Explanation.llm_model == llm_model, Explanation.prompt_hash == prompt_hash))
    return {(r.feature_id, r.candidate): r for r in rows}


def ok_explanations(session: Session, feature_ids: Sequence[int]) -> list[Any]:
    """All ``ok`` explanations of the given features (the ones worth scoring)."""
    return list(session.scalars(select(Explanation).where(
        Explanation.feature_id.in_(list(feature_ids)), Explanation.status == "ok"
    ).order_by(Explanation.feature_id, Explanation.id)))


def feature_explanations(session: Session, feature_id: int) -> list[dict[str, Any]]:
    """A feature's explanations with status, provenance and scores (each with its floor)."""
    out = []
    for expl in session.scalars(select(Explanation).where(Explanation.feature_id == feature_id)
                                .order_by(Explanation.id)):
        scores = session.scalars(select(Score).where(Score.explanation_id == expl.id)).all()
        out.append({
            "id": expl.id, "explainer": expl.explainer, "llm_model": expl.llm_model,
            "prompt_hash": expl.prompt_hash[:12], "candidate": expl.candidate,
            "status": expl.status, "text": expl.text, "error": expl.error,
            "reason": expl.reason, "is_best": expl.is_best,
            "scores": [{"scorer": s.scorer, "simulator": s.simulator, "value": s.value,
                        "floor": s.floor_value, "status": s.status, "n": s.n_examples,
                        "validation": s.validation_value, "null_p95": s.null_p95,
                        "ci_low": s.ci_low, "ci_high": s.ci_high, "verdict": s.verdict}
                       for s in scores],
        })
    return out


def store_candidates(session: Session, results: Mapping[int, Iterable[CandidateLike]],
                     run_id: int | None) -> dict[str, int]:
    """Insert candidates (or update a previously errored one); returns counts per status.

    The caller's session is one transaction, so a chunk of features is stored whole or not at
    all.
    """
    statuses: dict[str, int] = {}
    for fid, candidates in results.items():
        for cand in candidates:
            have = existing_explanations(session, [fid], cand.explainer, cand.llm_model,
                                         cand.prompt_hash)
            row = have.get((fid, cand.candidate)) or Explanation(
                feature_id=fid, explainer=cand.explainer, llm_model=cand.llm_model,
                prompt_hash=cand.prompt_hash, candidate=cand.candidate)
            row.text, row.status, row.error = cand.text, cand.status, cand.error
            row.raw_reply, row.llm_call_id = cand.raw_reply, cand.call_id
            row.settings, row.run_id = cand.settings, run_id
            row.reason = cand.reason
            row.gate_version = cand.gate_version
            session.add(row)
            statuses[cand.status] = statuses.get(cand.status, 0) + 1
    return statuses
