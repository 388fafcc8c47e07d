"""Embedders: the hashed fake, names, OpenAI (fake client, missing key), the local model."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from autolabel import embed as embed_module
from autolabel.db import Database
from autolabel.embed import (
    Embedder,
    HashEmbedder,
    OpenAIEmbedder,
    embed_missing,
    get_embedder,
)
from autolabel.errors import ConfigError, LLMError


def test_hash_embedder_is_deterministic_and_normalised() -> None:
    emb = HashEmbedder()
    a = emb.embed(["months of the year", "months of the year", "court cases", ""])
    assert a.dtype == np.float32 and a.shape == (4, 384) and a.flags.c_contiguous
    assert np.allclose(np.linalg.norm(a[:3], axis=1), 1.0, atol=1e-6)
    assert np.array_equal(a[0], a[1]) and not np.allclose(a[0], a[2])
    assert not a[3].any()  # empty text: zero vector, no NaN
    assert isinstance(emb, Embedder)
    assert emb.embed([]).shape == (0, 384)


def test_get_embedder_names() -> None:
    assert isinstance(get_embedder("hash"), HashEmbedder)
    with pytest.raises(ConfigError, match="unknown embedding model"):
        get_embedder("word2vec")


def test_openai_embedder_with_fake_client(database: Database) -> None:
    calls: list[list[str]] = []

    def create(model: str, input: list[str]) -> Any:
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

    def broken(model: str, input: list[str]) -> Any:
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


def test_local_embedder_small_batch_on_many_threads_does_not_deadlock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A query (small batch) runs on one torch thread under a lock; the model (loaded under
    its own lock) must still be reachable from inside it."""
    import torch  # heavy (~2 s import): only this test touches torch's thread count

    class FakeModel:
        def encode(self, texts: list[str], **kw: Any) -> np.ndarray:
            return np.ones((len(texts), 384), dtype=np.float32)

    threads: list[int] = []
    monkeypatch.setattr(embed_module, "_LOCAL_MODEL", FakeModel())
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    out: list[np.ndarray] = []
    worker = threading.Thread(target=lambda: out.append(embed_module.LocalEmbedder().embed(
        ["a query"])), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "LocalEmbedder.embed deadlocked on a small batch"
    assert out[0].shape == (1, 384) and threads == [1, 2]


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
