"""Audit rows: the audited SAE, the labels an audit reads, finished audits, audits and flags.

An audit decides whether it has work from these reads alone (SAE row by weights hash, collected
feature indices, best labels, a finished audit with the same key), so a repeated audit costs no
model load. Its write is one transaction: run row, audit row, flags and the final status.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from autolabel.db import Audit, Explanation, Feature, Flag, Score
from autolabel.store.runs import close_run, insert_run
from autolabel.store.saes import SAEIdentity, find_sae_by_hash, register_sae


@dataclass(frozen=True)
class AuditedSAE:
    """The SAE row an audit belongs to, detached from the session."""

    id: int
    name: str
    d_sae: int
    content_hash: str


@dataclass(frozen=True)
class FinishedAudit:
    """A finished audit's id, report path and stored summary."""

    audit_id: int
    report_path: str
    summary: dict[str, Any]


@dataclass(frozen=True)
class AuditIds:
    """The run and audit rows of an audit being written."""

    run_id: int
    audit_id: int


def find_audited_sae(session: Session, content_hash: str) -> AuditedSAE | None:
    """The registered SAE with these weights, or None when it was never registered."""
    row = find_sae_by_hash(session, content_hash)
    return None if row is None else AuditedSAE(row.id, row.name, row.d_sae, row.content_hash)


def register_audited_sae(session: Session, sae: SAEIdentity, layer: int | None,
                         metrics: dict[str, Any] | None = None) -> AuditedSAE:
    """Register a loaded SAE (no-op when its hash is known) and return its row."""
    row = register_sae(session, sae, layer, metrics)
    return AuditedSAE(row.id, row.name, row.d_sae, row.content_hash)


def collected_indices(session: Session, sae_id: int) -> list[int]:
    """Indices of the SAE's features that have a row (what was collected and labelled)."""
    return sorted(session.scalars(select(Feature.index).where(Feature.sae_id == sae_id)))


def best_labels(session: Session, sae_id: int,
                indices: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Feature index -> its best (else newest) ok explanation, with scores and floors.

    These are the audit's tier-1 inputs and part of its key, so the shape is stable JSON.
    """
    rows = session.execute(
        select(Feature.index, Explanation)
        .join(Explanation, Explanation.feature_id == Feature.id)
        .where(Feature.sae_id == sae_id, Explanation.status == "ok", Explanation.text.is_not(None))
        .order_by(Explanation.is_best, Explanation.created_at, Explanation.id)
    ).all()
    wanted = set(indices)
    best: dict[int, Explanation] = {int(i): e for i, e in rows if int(i) in wanted}  # last wins
    scores = _scores_by_explanation(session, [e.id for e in best.values()])
    return {idx: {"id": e.id, "text": e.text, "explainer": e.explainer,
                  "llm_model": e.llm_model, "prompt_hash": e.prompt_hash,
                  "scores": scores.get(e.id, [])}
            for idx, e in best.items()}


def _scores_by_explanation(session: Session,
                           ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """Every score of these explanations (one query), in insertion order."""
    out: dict[int, list[dict[str, Any]]] = {}
    if not ids:
        return out
    query = select(Score).where(Score.explanation_id.in_(list(ids))).order_by(Score.id)
    for s in session.scalars(query):
        out.setdefault(s.explanation_id, []).append(
            {"scorer": s.scorer, "simulator": s.simulator, "value": s.value,
             "floor": s.floor_value, "n": s.n_examples})
    return out


def find_finished_audit(session: Session, sae_id: int, key: str) -> FinishedAudit | None:
    """The newest finished audit of this SAE with this key (None if there is none)."""
    row = session.scalar(select(Audit).where(Audit.sae_id == sae_id, Audit.config_hash == key,
                                             Audit.status == "ok")
                         .order_by(Audit.id.desc()))
    if row is None or not row.report_path:
        return None
    return FinishedAudit(row.id, row.report_path, dict(row.summary or {}))


def start_audit(session: Session, *, sae_id: int, key: str, pairs: str,
                config: dict[str, Any], argv: list[str]) -> AuditIds:
    """Insert the audit's run row and its audit row (both running)."""
    run_id = insert_run(session, "audit", config, argv)
    audit = Audit(run_id=run_id, sae_id=sae_id, config_hash=key, pairs=pairs)
    session.add(audit)
    session.flush()
    return AuditIds(run_id, audit.id)


def insert_flags(session: Session, audit_id: int, sae_id: int,
                 flags: Sequence[dict[str, Any]]) -> None:
    """Flag rows; features without a row (never collected) get a bare one so flags can point."""
    wanted = sorted({int(f["feature"]) for f in flags})
    ids = dict(session.execute(select(Feature.index, Feature.id).where(
        Feature.sae_id == sae_id, Feature.index.in_(wanted))).tuples().all())
    for idx in wanted:
        if idx not in ids:
            row = Feature(sae_id=sae_id, index=idx)
            session.add(row)
            session.flush()
            ids[idx] = row.id
    session.add_all(Flag(
        audit_id=audit_id, feature_id=ids[f["feature"]], category=f["category"], tier=f["tier"],
        severity=f["severity"], effect_size=f["effect_size"], ci_low=f["ci_low"],
        ci_high=f["ci_high"], p_value=f["p_value"], q_value=f["q_value"],
        direction=f["direction"], evidence=f["evidence"]) for f in flags)


def finish_audit(session: Session, ids: AuditIds, report_path: str,
                 summary: dict[str, Any]) -> None:
    """Mark the audit and its run ok, with the report's path and summary."""
    audit = session.get(Audit, ids.audit_id)
    if audit is not None:
        audit.report_path, audit.status, audit.summary = report_path, "ok", summary
    close_run(session, ids.run_id, "ok", summary, None)
