"""A persistent approximate nearest-neighbour index of stored vectors (usearch HNSW, on disk).

Why: an exact scan must first read every vector out of the database (10 s and 1.5 GB at 1M
labels, in every process) before a 50 ms mat-vec. An HNSW graph saved beside the database and
*memory-mapped* (``Index.restore(view=True)``) opens in milliseconds and answers in one or two;
the operating system's page cache keeps it warm between processes.

* **Files.** ``<db file>.vectors/<model>.usearch`` plus ``<model>.json`` (what it holds) beside
  a SQLite file; under the cache dir for PostgreSQL (keyed by the URL without password). An
  in-memory database gets an in-memory index.
* **Keys** are embedding row ids. A changed explanation text deletes its row (trigger) and its
  new vector gets a new id, so a key never means two vectors; a dead key is dropped at query
  time, when candidates are checked against the table (the table stays the source of truth).
* **Freshness.** The meta records the table's max id, row count, its first and last rows. Rows added
  since (max id moved) are searched exactly from a small in-process delta until
  :func:`sync_index` (run by ``autolabel embed``) adds them to the file; a different first row
  (a new database at the same path, a model re-embedded) or many dead keys rebuild it.
* **Precision.** Vectors are stored as float16 (half the disk and page cache); callers re-score
  the candidates exactly from the float32 rows, so reported cosines are exact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from sqlalchemy.engine import Connection

from autolabel.config import cache_dir
from autolabel.db import Database, redact, sqlite_path
from autolabel.errors import NotFoundError
from autolabel.store.search import (
    EmbeddingState,
    embedding_state,
    embedding_token,
    vector_digest,
    vectors_after,
)

log = logging.getLogger("autolabel.search")

FORMAT = 1
DTYPE = "f16"
CONNECTIVITY = 16
# Build effort and search breadth, measured with benchmarks/bench_search.py's vectors
# (benchmarks/RESULTS.md): recall@10 of the top 10 of 40 re-scored candidates, against the
# exact scan, at 1M was 0.875 / 0.920 / 0.953 with ef 128 / 256 / 512 (search p50 4.7 / 6.1 /
# 10.6 ms); at 200k, 0.927 / 0.968 / 0.983. 512 is the smallest of these that reached 0.95 at
# both sizes. Doubling EXPANSION_ADD would gain about as much recall but double the build
# time (1M: ~17 min at 64), and change every saved index.
EXPANSION_ADD = 64
EXPANSION_SEARCH = 512
DEAD_SHARE = 0.2  # rebuild when this share of the file's keys no longer exist
ADD_BATCH = 65536


@dataclass
class IndexMeta:
    """What an index file holds (written next to it, read before opening it)."""

    model: str
    dim: int
    size: int  # keys in the file
    max_id: int  # the table's max embedding id the file was made up to
    first_id: int  # the table's first embedding id then (identity of the table)
    first_explanation: int
    first_digest: str  # digest of the first row's vector (see EmbeddingState)
    digest: str  # digest of the vector of row ``max_id``
    build: str = field(default_factory=lambda: uuid.uuid4().hex)
    format: int = FORMAT
    dtype: str = DTYPE
    connectivity: int = CONNECTIVITY

    def fits(self, state: EmbeddingState) -> bool:
        """Whether the file still describes (a prefix of) the table, ``state`` being read at
        this meta's ``max_id``: same first row, same last row, not too many dead keys."""
        return (self.format == FORMAT and self.dim == state.dim
                and self.first_id == state.first_id
                and self.first_explanation == state.first_explanation
                and self.first_digest == state.first_digest and self.digest == state.digest_at
                and self.max_id <= state.max_id
                and state.count >= (1 - DEAD_SHARE) * self.size)


def _slug(model: str) -> str:
    """A file name for a model name (``openai:text-embedding-3-small`` and the like)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._") or "model"
    return f"{clean[:80]}-{hashlib.sha1(model.encode()).hexdigest()[:8]}"


def index_dir(database: Database) -> Path | None:
    """Where a database's index files live (None: in memory only)."""
    if database.dialect == "sqlite":
        path = sqlite_path(database.url)
        return None if path is None else Path(str(path) + ".vectors")
    key = hashlib.sha1(redact(database.url).encode()).hexdigest()[:16]
    return cache_dir() / "vectors" / key


# ---------------------------------------------------------------------------------------------
# Building and saving


def _new_index(dim: int) -> Any:
    from usearch.index import Index  # heavy-ish (~0.3 s): only where vectors are searched

    return Index(ndim=dim, metric="cos", dtype=DTYPE, connectivity=CONNECTIVITY,
                 expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)


def _add_rows(index: Any, rows: Iterator[tuple[int, int, bytes]],
              dim: int) -> tuple[int, int, str]:
    """Add streamed (embedding id, dim, blob) rows (by id) in large batches; returns how many,
    the last id and the digest of its vector."""
    added, max_id, digest = 0, 0, ""
    last: bytes | None = None
    keys: list[int] = []
    blobs: list[bytes] = []

    def flush() -> None:
        nonlocal added
        if keys:
            vecs = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(keys), dim)
            index.add(np.asarray(keys, dtype=np.uint64), vecs, threads=0)
            added += len(keys)
            keys.clear()
            blobs.clear()

    for eid, width, blob in rows:
        if width != dim:
            raise NotFoundError(f"stored vectors have mixed widths ({width} and {dim}); delete "
                                "them and run `autolabel embed` again")
        keys.append(eid)
        blobs.append(blob)
        max_id, last = eid, blob
        if len(keys) >= ADD_BATCH:
            flush()
    flush()
    if added:
        digest = vector_digest(last)
    return added, max_id, digest


def _save(index: Any, meta: IndexMeta, folder: Path) -> None:
    """Write index then meta, each through a temporary file and an atomic rename, so a reader
    sees either the old pair or the new one (the meta names the build it describes)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / _slug(meta.model)
    tmp = base.with_suffix(f".{meta.build}.tmp")
    index.save(str(tmp))
    os.replace(tmp, base.with_suffix(".usearch"))
    tmp_meta = base.with_suffix(f".{meta.build}.json.tmp")
    tmp_meta.write_text(json.dumps(asdict(meta)), encoding="utf-8")
    os.replace(tmp_meta, base.with_suffix(".json"))


def read_meta(folder: Path, model: str) -> IndexMeta | None:
    """The meta of a saved index, or None when missing or unreadable (then it is rebuilt)."""
    try:
        data = json.loads((folder / f"{_slug(model)}.json").read_text(encoding="utf-8"))
        return IndexMeta(**data)
    except (OSError, ValueError, TypeError):
        return None


def build_index(conn: Connection, model: str, state: EmbeddingState) -> tuple[Any, IndexMeta]:
    """An index of every stored vector of ``model`` (in memory), with its meta."""
    started = time.perf_counter()
    index = _new_index(state.dim)
    size, max_id, digest = _add_rows(index, vectors_after(conn, model, 0), state.dim)
    meta = IndexMeta(model=model, dim=state.dim, size=size, max_id=max_id,
                     first_id=state.first_id, first_explanation=state.first_explanation,
                     first_digest=state.first_digest, digest=digest)
    log.info("vector index of %s: %d vectors built in %.1f s", model, size,
             time.perf_counter() - started)
    return index, meta


# ---------------------------------------------------------------------------------------------
# Opening for search


@dataclass
class OpenIndex:
    """An index ready for queries: the (memory-mapped) file plus the rows added since."""

    model: str
    dim: int
    index: Any  # usearch Index (a view of the file, or in memory)
    meta: IndexMeta
    delta_keys: np.ndarray  # embedding ids newer than the file, searched exactly
    delta: np.ndarray  # [n, dim] float32 unit rows
    max_id: int  # table max id this object answers for

    def __len__(self) -> int:
        return int(self.meta.size + len(self.delta_keys))

    def search(self, query: np.ndarray, count: int, ef: int = EXPANSION_SEARCH
               ) -> list[tuple[int, float]]:
        """Up to ``count`` (embedding id, approximate cosine), best first."""
        out: list[tuple[int, float]] = []
        if self.meta.size and count > 0:
            self.index.expansion_search = max(ef, count)
            exact = self.meta.size <= max(count, 4096)  # tiny: brute force is exact and fast
            found = self.index.search(query, min(count, self.meta.size), threads=1,
                                      exact=exact)
            out = [(int(k), 1.0 - float(d))
                   for k, d in zip(found.keys, found.distances, strict=True)]
        if len(self.delta_keys) and count > 0:
            scores = self.delta @ query
            top = np.argsort(-scores)[:count]
            out += [(int(self.delta_keys[i]), float(scores[i])) for i in top]
            out.sort(key=lambda c: -c[1])
        return out[:count]


def _open_view(folder: Path, meta: IndexMeta) -> Any:
    """Memory-map the saved file (milliseconds; pages come from the page cache on use)."""
    from usearch.index import Index  # see _new_index

    path = folder / f"{_slug(meta.model)}.usearch"
    index = Index.restore(str(path), view=True, enable_key_lookups=False)
    if index is None or len(index) != meta.size:
        raise OSError(f"{path} does not match its meta")
    return index


def _delta(conn: Connection, model: str, after: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows newer than the file, as keys and a float32 matrix."""
    keys: list[int] = []
    blobs: list[bytes] = []
    for eid, _width, blob in vectors_after(conn, model, after):
        keys.append(eid)
        blobs.append(blob)
    matrix = (np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(keys), dim).copy()
              if keys else np.zeros((0, dim), dtype=np.float32))
    return np.asarray(keys, dtype=np.int64), matrix


_OPEN: dict[tuple[str, str], OpenIndex] = {}
_LOCK = threading.Lock()
MAX_DELTA = 50_000  # beyond this many unsynced rows a search brings the file up to date


def open_index(database: Database, model: str, conn: Connection) -> OpenIndex:
    """The index of ``model`` for this database, cached per process and kept current. Per
    query this costs one max-id lookup and one small file read; newer rows come in as an
    exact delta; a missing, foreign or badly stale file is rebuilt from the table."""
    token = embedding_token(conn, model)
    key = (database.url, model)
    with _LOCK:
        cached = _OPEN.get(key)
        if cached is not None and cached.max_id == token and not _file_changed(database,
                                                                               cached):
            return cached
        opened = _open_current(database, model, conn)
        _OPEN[key] = opened
        return opened


def _file_changed(database: Database, opened: OpenIndex) -> bool:
    """Whether another process saved a newer file since this one was opened."""
    folder = index_dir(database)
    if folder is None:
        return False
    meta = read_meta(folder, opened.model)
    return meta is not None and meta.build != opened.meta.build


def _saved_fitting(folder: Path | None, conn: Connection,
                   model: str) -> tuple[IndexMeta | None, EmbeddingState]:
    """The saved meta if it still fits the table (else None), and the table's state."""
    meta = read_meta(folder, model) if folder is not None else None
    state = embedding_state(conn, model, at=meta.max_id if meta else 0)
    return (meta if meta is not None and meta.fits(state) else None), state


def _open_current(database: Database, model: str, conn: Connection) -> OpenIndex:
    """Open the saved file if it fits the table, else (re)build and save it first."""
    folder = index_dir(database)
    meta, state = _saved_fitting(folder, conn, model)
    if not state.count:
        raise NotFoundError(f"explanations are not embedded with {model} yet; run "
                            "`autolabel embed` (or search with --mode keyword)")
    index: Any = None
    if meta is not None and folder is not None and state.max_id - meta.max_id <= MAX_DELTA:
        try:
            index = _open_view(folder, meta)
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("vector index %s unreadable (%s); rebuilding", folder, exc)
            index = None
    if index is None or meta is None:
        index, meta = _rebuild(conn, model, state, folder)
    keys, delta = _delta(conn, model, meta.max_id, meta.dim)
    return OpenIndex(model=model, dim=meta.dim, index=index, meta=meta, delta_keys=keys,
                     delta=delta, max_id=state.max_id)


def _rebuild(conn: Connection, model: str, state: EmbeddingState,
             folder: Path | None) -> tuple[Any, IndexMeta]:
    """Bring the file up to the table (see :func:`_update_file`) and open it as a view; in
    memory when there is no folder or it cannot be written."""
    if folder is None:
        return build_index(conn, model, state)
    try:
        meta = _update_file(conn, model, folder)
        return _open_view(folder, meta), meta
    except OSError as exc:  # read-only folder: keep this process's copy in memory
        log.warning("cannot save the vector index in %s (%s); using it in memory", folder, exc)
        return build_index(conn, model, state)


def _update_file(conn: Connection, model: str, folder: Path) -> IndexMeta:
    """Under the folder's lock: add rows newer than a still-fitting file to it, or build the
    file anew from the table; returns the meta saved (or found already current)."""
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f"{_slug(model)}.lock"), timeout=3600):
        meta, state = _saved_fitting(folder, conn, model)  # another process may have synced
        if meta is not None and meta.max_id == state.max_id:
            return meta
        if meta is not None:
            index = _load_for_update(folder, meta)
            added, max_id, digest = _add_rows(index, vectors_after(conn, model, meta.max_id),
                                              meta.dim)
            meta = IndexMeta(model=model, dim=meta.dim, size=meta.size + added,
                             max_id=max_id or meta.max_id, first_id=meta.first_id,
                             first_explanation=meta.first_explanation,
                             first_digest=meta.first_digest, digest=digest or meta.digest)
        else:
            index, meta = build_index(conn, model, state)
        _save(index, meta, folder)
        return meta


def sync_index(database: Database, model: str) -> IndexMeta | None:
    """Bring the saved index up to the table (``autolabel embed`` calls this): add the new
    rows to the file, or rebuild it when the table was replaced or many keys died. Returns the
    meta saved, or None when there is nothing to index or nowhere to save it."""
    folder = index_dir(database)
    with database.engine.connect() as conn:
        if folder is None or not embedding_token(conn, model):
            return None
        meta = _update_file(conn, model, folder)
    clear_open_indexes()
    return meta


def _load_for_update(folder: Path, meta: IndexMeta) -> Any:
    """The saved index loaded into memory (a view cannot grow)."""
    from usearch.index import Index  # see _new_index

    index = Index.restore(str(folder / f"{_slug(meta.model)}.usearch"), view=False)
    if index is None:
        raise OSError("index file unreadable")
    return index


def clear_open_indexes() -> None:
    """Forget every opened index of this process (tests; after a sync)."""
    with _LOCK:
        _OPEN.clear()
