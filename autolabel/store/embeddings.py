"""Embedding vectors of explanations: what still needs one, storing a batch, dropping a model.

One row per (explanation, model), the vector a little-endian float32 blob. Writes ignore rows
that already exist, so two workers embedding at the same time never fail or duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from autolabel.db import Embedding, Explanation, pack_array

VECTOR_DTYPE = "float32"


def stored_dims(session: Session, model: str) -> set[int]:
    """The vector widths stored under ``model`` (one, unless something went wrong)."""
    rows = session.execute(select(Embedding.dim, func.count()).where(Embedding.model == model)
                           .group_by(Embedding.dim)).all()
    return {int(dim) for dim, _ in rows}


def unembedded(session: Session, model: str) -> list[tuple[int, str]]:
    """(id, text) of every ok explanation with text and no vector under ``model``, by id."""
    have = (select(Embedding.id)
            .where(Embedding.explanation_id == Explanation.id, Embedding.model == model)
            .exists())
    rows = session.execute(
        select(Explanation.id, Explanation.text)
        .where(Explanation.status == "ok", Explanation.text.is_not(None), ~have)
        .order_by(Explanation.id)
    ).all()
    return [(int(eid), str(body)) for eid, body in rows]


def add_embeddings(session: Session, model: str, explanation_ids: Sequence[int],
                   vectors: np.ndarray) -> None:
    """Store one vector per explanation (rows of ``vectors``, in order); a row that appeared
    meanwhile (another worker) is kept and the new one skipped."""
    rows = [{"explanation_id": int(eid), "model": model, "dim": int(vec.shape[0]),
             "vector": pack_array(vec, VECTOR_DTYPE)}
            for eid, vec in zip(explanation_ids, vectors, strict=True)]
    if rows:
        session.execute(_insert_ignoring_duplicates(session), rows)


def _insert_ignoring_duplicates(session: Session) -> Any:
    """INSERT … ON CONFLICT DO NOTHING on the (explanation, model) identity, per dialect."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    return insert(Embedding).on_conflict_do_nothing(index_elements=["explanation_id", "model"])


def delete_vectors(session: Session, model: str) -> int:
    """Drop every stored vector of ``model``; returns how many."""
    result = session.execute(delete(Embedding).where(Embedding.model == model))
    return int(getattr(result, "rowcount", 0) or 0)
