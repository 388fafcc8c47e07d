"""Audit rows: the audited SAE, the labels an audit reads, finished audits, audits and flags.

An audit decides whether it has work from these reads alone (SAE row by weights hash, collected
feature indices, labels with their trust verdicts, a finished audit with the same key), so a
repeated audit costs no model load. Its write is one transaction: run row, audit row (with its
document id, unique across databases), flags and the final status. The report cards also read
each flagged feature's own top corpus examples from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from autolabel.db import Audit, Explanation, Feature, Flag, unpack_array
from autolabel.db import Example as ExampleRow
from autolabel.store.collections import ACT_DTYPE, TOKEN_DTYPE
from autolabel.store.labels import Label, feature_labels
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
    """A finished audit's id, report path, stored summary and document id."""

    audit_id: int
    report_path: str
    summary: dict[str, Any]
    document_id: str | None = None


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


def audit_labels(session: Session, sae_id: int,
                 indices: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Feature index -> its label (:func:`~autolabel.store.labels.feature_labels`) as JSON.

    Every feature with a row gets an entry, verdict included (trusted, weak, at_floor,
    rejected, unscored); the audit uses only trusted and weak texts as tier-1 evidence. These
    are the audit's tier-1 inputs and part of its key, so the shape is stable JSON.
    """
    wanted = set(indices)
    ids = {int(fid): int(idx) for idx, fid in session.execute(
        select(Feature.index, Feature.id).where(Feature.sae_id == sae_id)).tuples()
        if int(idx) in wanted}
    labels = feature_labels(session, sorted(ids))
    hashes = dict(session.execute(select(Explanation.id, Explanation.prompt_hash).where(
        Explanation.id.in_([lab.explanation_id for lab in labels.values()
                            if lab.explanation_id is not None]))).tuples().all())
    return {ids[fid]: _label_json(lab, hashes.get(lab.explanation_id or -1))
            for fid, lab in labels.items() if lab.text is not None or lab.verdict == "rejected"}


def _label_json(lab: Label, prompt_hash: str | None) -> dict[str, Any]:
    """The label fields an audit keys on and shows."""
    return {"id": lab.explanation_id, "text": lab.text, "verdict": lab.verdict,
            "prompt_hash": prompt_hash,
            "explainer": lab.explainer or "", "llm_model": lab.llm_model, "scorer": lab.scorer,
            "simulator": lab.simulator, "score": lab.score, "floor": lab.floor,
            "null_p95": lab.null_p95, "ci": [lab.ci_low, lab.ci_high],
            "selected_on": lab.selected_on}


def top_examples(session: Session, sae_id: int, indices: Sequence[int],
                 k: int = 3) -> dict[int, list[tuple[Any, Any, float]]]:
    """Per feature index, its ``k`` highest-activating stored corpus windows from distinct
    documents: (token ids, per-token activations, max activation). Empty when not collected."""
    feats = dict(session.execute(select(Feature.id, Feature.index).where(
        Feature.sae_id == sae_id, Feature.index.in_(list(indices)))).tuples().all())
    rows = session.scalars(select(ExampleRow).join(
        Feature, (Feature.id == ExampleRow.feature_id)
        & (Feature.collection_id == ExampleRow.collection_id))
        .where(ExampleRow.feature_id.in_(list(feats)), ExampleRow.kind == "top")
        .order_by(ExampleRow.feature_id, ExampleRow.max_activation.desc(), ExampleRow.id))
    out: dict[int, list[tuple[Any, Any, float]]] = {int(i): [] for i in indices}
    seen: set[tuple[int, str]] = set()
    for r in rows:
        idx = int(feats[r.feature_id])
        if len(out[idx]) >= k or (idx, r.document_id) in seen:
            continue
        seen.add((idx, r.document_id))
        out[idx].append((unpack_array(r.token_ids, TOKEN_DTYPE),
                         unpack_array(r.activations, ACT_DTYPE), float(r.max_activation)))
    return out


def find_finished_audit(session: Session, sae_id: int, key: str) -> FinishedAudit | None:
    """The newest finished audit of this SAE with this key (None if there is none)."""
    row = session.scalar(select(Audit).where(Audit.sae_id == sae_id, Audit.config_hash == key,
                                             Audit.status == "ok")
                         .order_by(Audit.id.desc()))
    if row is None or not row.report_path:
        return None
    return FinishedAudit(row.id, row.report_path, dict(row.summary or {}), row.document_id)


def start_audit(session: Session, *, sae_id: int, key: str, pairs: str,
                config: dict[str, Any], argv: list[str]) -> AuditIds:
    """Insert the audit's run row and its audit row (both running)."""
    run_id = insert_run(session, "audit", config, argv)
    audit = Audit(run_id=run_id, sae_id=sae_id, config_hash=key, pairs=pairs)
    session.add(audit)
    session.flush()
    return AuditIds(run_id, audit.id)


def set_document_id(session: Session, audit_id: int, document_id: str) -> None:
    """Record the audit's document id (known once the audit row has its id)."""
    audit = session.get(Audit, audit_id)
    if audit is not None:
        audit.document_id = document_id


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
