"""Writing feature records (see :mod:`autolabel.store.records`) back, idempotently.

Every row is found by its natural key (SAE by weights hash, collection by key, feature by
(SAE, index), example by (collection, split, kind, rank), explanation by (explainer, LLM,
prompt, candidate), score by (scorer, simulator), embedding by model), inserted when missing
and updated only where a field differs, so writing the same record twice changes nothing and
the summary says exactly what changed. Floors name their source explanation by identity; one
whose source is not stored yet is returned as pending and linked by :func:`resolve_floors`.
"""

from __future__ import annotations

import base64
import math
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from autolabel.db import (
    Collection,
    Database,
    Embedding,
    Explanation,
    Feature,
    SAERecord,
    Score,
    utcnow,
)
from autolabel.db import Example as ExampleRow
from autolabel.errors import DatabaseError
from autolabel.store.records import (
    COLLECTION_FIELDS,
    EXAMPLE_FIELDS,
    EXPLANATION_FIELDS,
    FEATURE_FIELDS,
    SAE_FIELDS,
    SCORE_FIELDS,
    SCORE_TRUST_FIELDS,
)
from autolabel.store.saes import find_sae_by_hash


@dataclass
class ImportSummary:
    """What an import did; a repeated import reports inserted == updated == 0."""

    features: int = 0
    inserted: int = 0  # rows created (SAEs, collections, features, examples, ...)
    updated: int = 0  # rows that existed before and whose content changed
    unresolved_floors: int = 0  # floors whose source explanation is in neither file nor DB

    def as_json(self) -> dict[str, int]:
        """JSON-ready view (``--json``)."""
        return asdict(self)


@dataclass
class PendingFloor:
    """A score whose floor explanation was not in the database when its record was written."""

    score_id: int
    floor: dict[str, Any]
    new: bool  # inserted by this import: linking its floor is not an update


class RecordConflict(DatabaseError):
    """A valid record the database refuses (it contradicts a constraint); ``reason`` is the
    database's first message line, for the caller to name the offending input."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"record cannot be stored ({reason}); it contradicts the database — "
                         "fix it and re-run")
        self.reason = reason


def import_record(database: Database, record: dict[str, Any],
                  summary: ImportSummary) -> list[PendingFloor]:
    """Write one validated record in its own transaction (all of the feature or none);
    returns the scores whose floor could not be resolved yet."""
    try:
        with database.session() as session:
            pending = _import_record(session, record, summary)
    except SQLAlchemyError as exc:
        raise RecordConflict(str(getattr(exc, "orig", None) or exc).splitlines()[0]) from None
    summary.features += 1
    return pending


def resolve_floors(database: Database, pending: list[PendingFloor],
                   summary: ImportSummary) -> int:
    """Link floors whose source explanation was written later; returns how many remain
    unresolved (their source was in neither the input nor the database)."""
    if not pending:
        return 0
    unresolved = 0
    with database.session() as session:
        for item in pending:
            floor_id = _find_floor(session, item.floor)
            score = session.get(Score, item.score_id)
            if floor_id is None or score is None:
                unresolved += 1
            elif score.floor_explanation_id != floor_id:
                score.floor_explanation_id = floor_id
                summary.updated += not item.new
    return unresolved


def _same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN (so re-importing NaN is not a change)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _sync(session: Session, model: type, existing: dict[Any, Any], key: Any,
          values: dict[str, Any], summary: ImportSummary) -> Any:
    """Insert the row for ``key`` or update only the fields that differ; count what changed."""
    row = existing.get(key)
    if row is None:
        row = model(**values)
        session.add(row)
        existing[key] = row
        summary.inserted += 1
        return row
    changed = [k for k, v in values.items() if not _same(getattr(row, k), v)]
    for name in changed:
        setattr(row, name, values[name])
    summary.updated += bool(changed)
    return row


def _sync_one(session: Session, model: type, found: Any, values: dict[str, Any],
              summary: ImportSummary) -> Any:
    """:func:`_sync` for a row looked up on its own (``found`` or None)."""
    return _sync(session, model, {0: found} if found is not None else {}, 0, values, summary)


def _import_record(session: Session, rec: dict[str, Any], summary: ImportSummary
                   ) -> list[PendingFloor]:
    """Write one record; returns scores whose floor could not be resolved yet."""
    sae = _import_sae(session, rec["sae"], summary)
    colls = {c["key"]: _import_collection(session, sae.id, c, summary)
             for c in rec["collections"]}
    feature = _import_feature(session, sae.id, rec["feature"], colls, summary)
    _import_examples(session, feature.id, rec["examples"], colls, summary)
    return _import_explanations(session, feature.id, rec["explanations"], summary)


def _import_sae(session: Session, data: dict[str, Any], summary: ImportSummary) -> SAERecord:
    """The SAE by weights hash; an existing row is kept as is (its name and path are local)."""
    found = find_sae_by_hash(session, data["content_hash"])
    if found is not None:
        return found
    values = {k: data[k] for k in SAE_FIELDS}
    if session.scalar(select(SAERecord.id).where(SAERecord.name == data["name"])) is not None:
        values["name"] = f"{data['name']}@{data['content_hash'][:8]}"  # same handle, new weights
    row = SAERecord(**values)
    session.add(row)
    session.flush()
    summary.inserted += 1
    return row


def _import_collection(session: Session, sae_id: int, data: dict[str, Any],
                       summary: ImportSummary) -> Collection:
    """The collection by key (its key already hashes the SAE and every setting)."""
    found = session.scalar(select(Collection).where(Collection.key == data["key"]))
    values = {**{k: data[k] for k in COLLECTION_FIELDS},
              "sae_id": found.sae_id if found else sae_id}
    row: Collection = _sync_one(session, Collection, found, values, summary)
    session.flush()
    return row


def _import_feature(session: Session, sae_id: int, data: dict[str, Any],
                    colls: dict[str, Collection], summary: ImportSummary) -> Feature:
    """The feature by (SAE, index); the record's statistics and current collection win."""
    found = session.scalar(select(Feature).where(Feature.sae_id == sae_id,
                                                 Feature.index == data["index"]))
    coll = colls.get(data["collection"]) if data["collection"] else None
    values = {**{k: data[k] for k in FEATURE_FIELDS}, "sae_id": sae_id,
              "collection_id": coll.id if coll else None}
    before = summary.inserted + summary.updated
    row: Feature = _sync_one(session, Feature, found, values, summary)
    if found is not None and summary.updated + summary.inserted > before:
        row.updated_at = utcnow()
    session.flush()
    return row


def _import_examples(session: Session, feature_id: int, examples: list[dict[str, Any]],
                     colls: dict[str, Collection], summary: ImportSummary) -> None:
    """Examples by (feature, collection, split, kind, rank), blobs stored byte for byte."""
    existing = {(r.collection_id, r.split, r.kind, r.rank): r for r in session.scalars(
        select(ExampleRow).where(ExampleRow.feature_id == feature_id))}
    for ex in examples:
        coll_id = colls[ex["collection"]].id
        values = {**{k: ex[k] for k in EXAMPLE_FIELDS}, "feature_id": feature_id,
                  "collection_id": coll_id, "token_ids": base64.b64decode(ex["token_ids"]),
                  "activations": base64.b64decode(ex["activations"])}
        _sync(session, ExampleRow, existing, (coll_id, ex["split"], ex["kind"], ex["rank"]),
              values, summary)


def _import_explanations(session: Session, feature_id: int, expls: list[dict[str, Any]],
                         summary: ImportSummary) -> list[PendingFloor]:
    """Explanations by identity, then their scores and embeddings; the record's best flag
    wins."""
    existing = {(r.explainer, r.llm_model, r.prompt_hash, r.candidate): r
                for r in session.scalars(select(Explanation).where(
                    Explanation.feature_id == feature_id))}
    rows = []
    for data in expls:
        key = (data["explainer"], data["llm_model"], data["prompt_hash"], data["candidate"])
        values = {**{k: data[k] for k in EXPLANATION_FIELDS}, "feature_id": feature_id}
        rows.append(_sync(session, Explanation, existing, key, values, summary))
    if any(d["is_best"] for d in expls):
        imported = {id(r) for r in rows}
        for other in existing.values():
            if id(other) not in imported and other.is_best:
                other.is_best = False
                summary.updated += 1
    session.flush()
    pending: list[PendingFloor] = []
    for row, data in zip(rows, expls, strict=True):
        pending += _import_scores(session, row.id, data["scores"], summary)
        _import_embeddings(session, row.id, data["embeddings"], summary)
    return pending


def _import_scores(session: Session, expl_id: int, scores: list[dict[str, Any]],
                   summary: ImportSummary) -> list[PendingFloor]:
    """Scores by (explanation, scorer, simulator); floors resolved now when possible."""
    existing = {(r.scorer, r.simulator): r for r in session.scalars(
        select(Score).where(Score.explanation_id == expl_id))}
    later: list[tuple[Score, dict[str, Any], bool]] = []
    for data in scores:
        new = (data["scorer"], data["simulator"]) not in existing
        values = {**{k: data[k] for k in SCORE_FIELDS},
                  **{k: data.get(k) for k in SCORE_TRUST_FIELDS}, "explanation_id": expl_id}
        floor = data["floor_explanation"]
        floor_id = _find_floor(session, floor) if floor else None
        if floor_id is not None or floor is None:
            values["floor_explanation_id"] = floor_id
        row = _sync(session, Score, existing, (data["scorer"], data["simulator"]), values,
                    summary)
        if floor is not None and floor_id is None:
            later.append((row, floor, new))
    session.flush()
    return [PendingFloor(row.id, floor, new) for row, floor, new in later]


def _import_embeddings(session: Session, expl_id: int, embeds: list[dict[str, Any]],
                       summary: ImportSummary) -> None:
    """Embedding vectors by (explanation, model), stored byte for byte."""
    existing = {r.model: r for r in session.scalars(
        select(Embedding).where(Embedding.explanation_id == expl_id))}
    for data in embeds:
        values = {"explanation_id": expl_id, "model": data["model"], "dim": data["dim"],
                  "vector": base64.b64decode(data["vector"])}
        _sync(session, Embedding, existing, data["model"], values, summary)


def _find_floor(session: Session, ref: dict[str, Any]) -> int | None:
    """The id of the explanation a floor reference names, if it is in the database."""
    found: int | None = session.scalar(
        select(Explanation.id)
        .join(Feature, Explanation.feature_id == Feature.id)
        .join(SAERecord, Feature.sae_id == SAERecord.id)
        .where(SAERecord.content_hash == ref["sae"], Feature.index == ref["index"],
               Explanation.explainer == ref["explainer"],
               Explanation.llm_model == ref["llm_model"],
               Explanation.prompt_hash == ref["prompt_hash"],
               Explanation.candidate == ref["candidate"]))
    return found
