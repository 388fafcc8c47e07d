"""Incremental embedding: only ok explanations without a vector, batches, widths, deletion."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from autolabel.db import Database, Embedding, Explanation, unpack_array
from autolabel.embed import HashEmbedder, delete_embeddings, embed_missing
from autolabel.errors import DatabaseError


def count(database: Database, model: str) -> int:
    with database.session() as s:
        return int(s.scalar(select(func.count()).select_from(Embedding)
                            .where(Embedding.model == model)) or 0)


def test_embed_missing_is_incremental(database: Database) -> None:
    seen: list[tuple[int, int]] = []
    emb = HashEmbedder()
    assert embed_missing(database, emb, batch_size=2,
                         progress=lambda d, t: seen.append((d, t))) == 5
    assert seen == [(0, 5), (2, 5), (4, 5), (5, 5)]
    assert count(database, emb.name) == 5  # only ok explanations
    assert embed_missing(database, emb) == 0
    with database.session() as s:
        s.add(Explanation(feature_id=1, explainer="tokens", text="new one", status="ok"))
    assert embed_missing(database, emb) == 1
    assert count(database, emb.name) == 6
    # Another model name is embedded independently.
    assert embed_missing(database, HashEmbedder(name="other")) == 6
    with database.session() as s:
        row = s.execute(select(Embedding).where(Embedding.model == emb.name)).scalars().first()
        assert row is not None and row.dim == 384
        vec = unpack_array(row.vector, "float32")
    assert vec.shape == (384,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5
    assert delete_embeddings(database, "other") == 6
    assert count(database, "other") == 0


def test_embed_missing_rejects_other_width(database: Database) -> None:
    embed_missing(database, HashEmbedder())
    with database.session() as s:
        s.add(Explanation(feature_id=2, explainer="tokens", text="x", status="ok"))
    with pytest.raises(DatabaseError, match="dim"):
        embed_missing(database, HashEmbedder(dim=16))

