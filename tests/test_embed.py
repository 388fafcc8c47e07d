"""Embedders and incremental embedding."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from autolabel import db as dbm
from autolabel.db import Database, Embedding, Explanation, Feature, SAERecord, unpack_array
from autolabel.embed import (
    Embedder,
    HashEmbedder,
    OpenAIEmbedder,
    delete_embeddings,
    embed_missing,
    get_embedder,
)
from autolabel.errors import ConfigError, DatabaseError, LLMError


@pytest.fixture
def database(sqlite_url: str) -> Iterator[Database]:
    database = dbm.open_database(sqlite_url)
    with database.session() as s:
        sae = SAERecord(name="s", source="t", hook_name="h", layer=1, d_in=4, d_sae=8,
                        architecture="topk", content_hash="c")
        s.add(sae)
        s.flush()
        for i in range(5):
            feature = Feature(sae_id=sae.id, index=i)
            s.add(feature)
            s.flush()
            s.add(Explanation(feature_id=feature.id, explainer="llm", text=f"text number {i}",
                              status="ok"))
            s.add(Explanation(feature_id=feature.id, explainer="llm", candidate=1, text=None,
                              status="parse_error"))
    yield database
    database.close()


def count(database: Database, model: str) -> int:
    with database.session() as s:
        return int(s.scalar(select(func.count()).select_from(Embedding)
                            .where(Embedding.model == model)) or 0)


def test_hash_embedder_is_deterministic_and_normalised() -> None:
    emb = HashEmbedder()
    a = emb.embed(["months of the year", "months of the year", "court cases", ""])
    assert a.dtype == np.float32 and a.shape == (4, 384) and a.flags.c_contiguous
    assert np.allclose(np.linalg.norm(a[:3], axis=1), 1.0, atol=1e-6)
    assert np.array_equal(a[0], a[1]) and not np.allclose(a[0], a[2])
    assert not a[3].any()  # empty text: zero vector, no NaN
    assert isinstance(emb, Embedder)
    assert emb.embed([]).shape == (0, 384)


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


def test_get_embedder_names() -> None:
    assert isinstance(get_embedder("hash"), HashEmbedder)
    with pytest.raises(ConfigError, match="unknown embedding model"):
        get_embedder("word2vec")


def test_openai_embedder_with_fake_client(database: Database) -> None:
    calls: list[list[str]] = []

    def create(model: str, input: list[str]) -> Any:  # noqa: A002 - the SDK's name
        calls.append(input)
        data = [SimpleNamespace(index=i, embedding=[float(len(t)), 1.0, 0.0])
                for i, t in reversed(list(enumerate(input)))]
        return SimpleNamespace(data=data)

    client = SimpleNamespace(embeddings=SimpleNamespace(create=create))
    emb = OpenAIEmbedder("text-embedding-3-small", dim=3, batch_size=3, client=client)
    vectors = emb.embed(["a", "bbb", "cc", "dddd"])
    assert [len(c) for c in calls] == [3, 1]
    assert vectors.shape == (4, 3) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert vectors[1, 0] > vectors[0, 0]  # order follows the reply's index field
    assert embed_missing(database, emb) == 5

    def broken(model: str, input: list[str]) -> Any:  # noqa: A002
        raise RuntimeError("401 bad key")

    bad = OpenAIEmbedder("text-embedding-3-small", client=SimpleNamespace(
        embeddings=SimpleNamespace(create=broken)))
    with pytest.raises(LLMError, match="401 bad key"):
        bad.embed(["x"])


def test_openai_embedder_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AUTOLABEL_LLM__BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIEmbedder()


@pytest.mark.slow
def test_local_embedder_real_model() -> None:
    from autolabel.embed import LocalEmbedder

    emb = get_embedder("all-MiniLM-L6-v2")
    assert isinstance(emb, LocalEmbedder) and emb.dim == 384
    assert LocalEmbedder().model is emb.model  # loaded once per process
    v = emb.embed(["citations of court cases", "lawsuit references", "colour words"])
    assert v.dtype == np.float32 and v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2])
