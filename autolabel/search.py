"""Search features by their explanations: keyword (FTS5 / tsvector), semantic, hybrid (RRF).

* keyword: SQLite FTS5 ``search_fts`` ranked by bm25, or PostgreSQL ``search_tsv`` ranked by
  ts_rank (both created and kept in sync by migration 0002). User text is reduced to quoted
  word terms, so any input is a valid query: all terms must match (AND); when that finds too
  little, any term may match (OR), ranked after the AND hits.
* semantic: exact cosine top-k over a contiguous float32 matrix of every stored vector of the
  embedder's model, loaded once per process and reloaded when vectors are added (max id) or
  found deleted; one BLAS mat-vec + ``np.argpartition`` per query.
* hybrid (default): reciprocal rank fusion (k = 60) of the keyword AND ranking (no OR
  fallback: matches on one generic word would outvote the semantic ranking) and the semantic one.

One hit per explanation is ranked, then results are deduplicated per feature (best kept).

The SQL (full-text matching, filters, vectors, hit details) is :mod:`autolabel.store.search`;
this module holds the ranking: query terms, modes, the in-process vector index and fusion.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.engine import Connection

from autolabel.db import Database
from autolabel.embed import LOCAL_MODEL, Embedder, get_embedder
from autolabel.errors import InputError, NotFoundError
from autolabel.store.search import (
    Candidate,
    SearchFilters,
    alive_explanations,
    best_scores,
    embedding_token,
    feature_ids_matching,
    fts5_query,
    has_embeddings,
    has_filters,
    has_ok_explanations,
    hit_rows,
    keyword_matches,
    sae_exists,
    sae_ids_matching,
    sae_names,
    tsquery,
    vector_rows,
)

__all__ = ["MODES", "RRF_K", "STOPWORDS", "Candidate", "SearchFilters", "SearchHit",
           "VectorIndex", "clear_index_cache", "dedupe_features", "fts5_query",
           "keyword_candidates", "query_terms", "rrf", "search", "semantic_candidates",
           "tsquery", "vector_index"]

MODES = ("hybrid", "keyword", "semantic")
RRF_K = 60

_TERM = re.compile(r"[^\W_]+")
# Dropped from keyword queries (when something else remains): they match nearly everything.
STOPWORDS = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "is",
    "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "were", "with", "which",
    "who", "whom",
])


@dataclass
class SearchHit:
    """One feature found, via its best-ranked explanation."""

    feature: str  # "SAE:INDEX"
    sae: str
    index: int
    layer: int | None
    explanation_id: int
    explanation: str
    explainer: str
    score: float | None  # best score of the feature's explanations under the filters' scorer
    floor: float | None  # that score's floor (a wrong explanation's score)
    density: float
    rank_score: float  # bm25 (negated, higher = better) / cosine / RRF, depending on mode
    mode: str
    rank: int = 0  # 1-based position in the results


# ---------------------------------------------------------------------------------------------
# Keyword


def query_terms(query: str) -> list[str]:
    """Word terms of a user query (letters/digits only, lower-cased, de-duplicated, no stopwords
    unless nothing else is left). Everything FTS5 or tsquery would parse as syntax is gone."""
    seen: dict[str, None] = {}
    for word in _TERM.findall(query.lower()):
        seen.setdefault(word, None)
    terms = list(seen)
    content = [t for t in terms if t not in STOPWORDS]
    return content or terms


def keyword_candidates(conn: Connection, query: str, filters: SearchFilters, depth: int,
                       need: int, fallback: bool = True) -> list[Candidate]:
    """Up to ``depth`` explanations, best first: AND of the terms, then (when the AND found
    fewer than ``need`` features and ``fallback``) OR-only matches after them."""
    terms = query_terms(query)
    if not terms:
        return []
    hits = keyword_matches(conn, terms, "AND", filters, depth)
    if (fallback and len(terms) > 1 and len({f for _, f, _ in hits}) < need
            and len(hits) < depth):
        seen = {i for i, _, _ in hits}
        # OR scores are on another scale: keep them strictly below the AND hits.
        floor = min((s for _, _, s in hits), default=0.0)
        extra = [(i, f, s) for i, f, s in keyword_matches(conn, terms, "OR", filters, depth)
                 if i not in seen]
        top = max((s for _, _, s in extra), default=0.0)
        hits += [(i, f, s - top + floor - 1.0) for i, f, s in extra][: depth - len(hits)]
    return hits


# ---------------------------------------------------------------------------------------------
# Semantic: one matrix per (database, model), cached in the process


@dataclass
class VectorIndex:
    """Every stored vector of one model as a contiguous float32 matrix, with row metadata."""

    model: str
    token: int  # max embedding id it was built from (-1: stale, reload)
    matrix: np.ndarray  # [n, dim] float32, C-contiguous, rows L2-normalised
    explanation_ids: np.ndarray  # [n] int64
    feature_ids: np.ndarray  # [n] int64
    sae_ids: np.ndarray  # [n] int64
    explainer_codes: np.ndarray  # [n] int32 into explainers
    explainers: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return int(self.matrix.shape[0])


_INDEXES: dict[tuple[str, str], VectorIndex] = {}
_INDEX_LOCK = threading.Lock()


def _drop_deleted(conn: Connection, database: Database, index: VectorIndex,
                  candidates: list[Candidate]) -> list[Candidate]:
    """Remove candidates whose vector was deleted since the matrix was loaded (text changed,
    explanation deleted); if there were any, the next query reloads the matrix."""
    if not candidates:
        return candidates
    alive = alive_explanations(conn, index.model, [c[0] for c in candidates])
    if len(alive) == len(candidates):
        return candidates
    with _INDEX_LOCK:
        if _INDEXES.get((database.url, index.model)) is index:
            index.token = -1
    return [c for c in candidates if c[0] in alive]


def vector_index(database: Database, model: str, conn: Connection | None = None) -> VectorIndex:
    """The cached matrix for ``model``, rebuilt when embeddings were added (the store's
    embedding token, the max id, moved) or found deleted (token reset to -1)."""
    with contextlib.ExitStack() as stack:
        c = conn if conn is not None else stack.enter_context(database.engine.connect())
        token = embedding_token(c, model)
        key = (database.url, model)
        with _INDEX_LOCK:
            cached = _INDEXES.get(key)
            if cached is not None and cached.token == token:
                return cached
            index = _load_index(c, model, token)
            _INDEXES[key] = index
            return index


def clear_index_cache() -> None:
    """Forget every cached matrix (tests, or to free memory)."""
    with _INDEX_LOCK:
        _INDEXES.clear()


def _load_index(conn: Connection, model: str, token: int) -> VectorIndex:
    """Read every vector row of ``model`` into one matrix plus per-row metadata arrays."""
    ids: list[int] = []
    fids: list[int] = []
    sids: list[int] = []
    explainer_names: list[str] = []
    blobs: list[bytes] = []
    dims: set[int] = set()
    for eid, fid, sid, explainer, dim, blob in vector_rows(conn, model):
        ids.append(eid)
        fids.append(fid)
        sids.append(sid)
        explainer_names.append(explainer)
        dims.add(dim)
        blobs.append(blob)
    if len(dims) > 1:
        raise NotFoundError(
            f"embeddings of {model} have mixed widths {sorted(dims)}; delete them and run "
            "`autolabel embed` again"
        )
    dim = dims.pop() if dims else 0
    n = len(ids)
    matrix = (np.frombuffer(b"".join(blobs), dtype="<f4").astype(np.float32, copy=False)
              .reshape(n, dim) if n else np.zeros((0, dim), dtype=np.float32))
    del blobs
    matrix = np.ascontiguousarray(matrix)
    if not matrix.flags.writeable:
        matrix = matrix.copy()
    names, codes = (np.unique(np.asarray(explainer_names, dtype=object).astype(str),
                              return_inverse=True) if n else (np.array([], dtype=str),
                                                              np.zeros(0, dtype=np.int64)))
    return VectorIndex(
        model=model, token=token, matrix=matrix,
        explanation_ids=np.asarray(ids, dtype=np.int64),
        feature_ids=np.asarray(fids, dtype=np.int64),
        sae_ids=np.asarray(sids, dtype=np.int64),
        explainer_codes=np.asarray(codes, dtype=np.int32),
        explainers=[str(x) for x in names],
    )


def _semantic_mask(conn: Connection, index: VectorIndex,
                   filters: SearchFilters) -> np.ndarray | None:
    """Rows allowed by the filters (None = all), vectorised over the cached metadata."""
    if not has_filters(filters):
        return None
    mask = np.ones(len(index), dtype=bool)
    if filters.sae is not None or filters.layer is not None:
        sae_ids = sae_ids_matching(conn, filters)
        mask &= np.isin(index.sae_ids, np.asarray(sae_ids, dtype=np.int64))
    if filters.explainer is not None:
        if filters.explainer in index.explainers:
            mask &= index.explainer_codes == index.explainers.index(filters.explainer)
        else:
            mask[:] = False
    if filters.min_score is not None or filters.flagged is not None:
        feature_ids = feature_ids_matching(conn, filters)
        mask &= np.isin(index.feature_ids, np.asarray(feature_ids, dtype=np.int64))
    return mask
def semantic_candidates(index: VectorIndex, query_vector: np.ndarray, depth: int,
                        mask: np.ndarray | None = None) -> list[Candidate]:
    """Exact cosine top-``depth`` (rows are unit vectors, so cosine = dot product)."""
    if len(index) == 0 or depth <= 0:
        return []
    q = np.ascontiguousarray(query_vector, dtype=np.float32).reshape(-1)
    if q.shape[0] != index.dim:
        raise NotFoundError(
            f"stored {index.model} vectors are {index.dim}-d but the query is {q.shape[0]}-d; "
            "re-run `autolabel embed` with the same model"
        )
    if mask is None:
        rows = None
        scores = index.matrix @ q
    else:
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            return []
        if rows.size * 4 < len(index):  # few rows allowed: score only those
            scores = index.matrix[rows] @ q
        else:
            scores = index.matrix @ q
            scores = scores[rows]
    m = min(depth, scores.shape[0])
    top = np.argpartition(-scores, m - 1)[:m] if m < scores.shape[0] else np.arange(m)
    top = top[np.argsort(-scores[top], kind="stable")]
    picked = top if rows is None else rows[top]
    return [(int(i), int(f), float(s)) for i, f, s in zip(
        index.explanation_ids[picked], index.feature_ids[picked], scores[top], strict=True)]


# ---------------------------------------------------------------------------------------------
# Fusion, de-duplication, results


def rrf(rankings: Sequence[Sequence[Candidate]], k: int = RRF_K) -> list[Candidate]:
    """Reciprocal rank fusion: score = sum over rankings of 1 / (k + rank), rank from 1."""
    fused: dict[int, list[Any]] = {}
    for ranking in rankings:
        for rank, (eid, fid, _) in enumerate(ranking, start=1):
            entry = fused.setdefault(eid, [fid, 0.0])
            entry[1] += 1.0 / (k + rank)
    return sorted(((eid, v[0], v[1]) for eid, v in fused.items()), key=lambda c: (-c[2], c[0]))


def dedupe_features(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Keep the first (best) explanation of each feature, order preserved."""
    seen: set[int] = set()
    out: list[Candidate] = []
    for cand in candidates:
        if cand[1] not in seen:
            seen.add(cand[1])
            out.append(cand)
    return out


def _until_enough(fetch: Callable[[int], tuple[list[Candidate], bool]], limit: int,
                  depth: int) -> list[Candidate]:
    """Fetch deeper until ``limit`` distinct features are found or nothing more exists."""
    while True:
        ranked, exhausted = fetch(depth)
        unique = dedupe_features(ranked)
        if len(unique) >= limit or exhausted:
            return unique[:limit]
        depth *= 4


def _hydrate(conn: Connection, picked: Sequence[Candidate], filters: SearchFilters,
             mode: str) -> list[SearchHit]:
    """The picked candidates as hits, in order, with each feature's best score; candidates
    that no longer pass (changed since they were indexed or cached) are dropped."""
    if not picked:
        return []
    rows = hit_rows(conn, [c[0] for c in picked], filters)
    best = best_scores(conn, sorted({r.feature_id for r in rows.values()}), filters.scorer)
    hits: list[SearchHit] = []
    for eid, _, rank_score in picked:
        row = rows.get(eid)
        if row is None:
            continue
        score, floor = best.get(row.feature_id, (None, None))
        hits.append(SearchHit(
            feature=f"{row.sae}:{row.index}", sae=row.sae, index=int(row.index),
            layer=row.layer, explanation_id=int(eid), explanation=row.text,
            explainer=row.explainer, score=score, floor=floor,
            density=float(row.density or 0.0), rank_score=float(rank_score), mode=mode,
            rank=len(hits) + 1,
        ))
    return hits


def _require_searchable(conn: Connection, mode: str, model: str | None,
                        filters: SearchFilters) -> None:
    """Clear one-line errors for an empty or unindexed database, or an unknown SAE."""
    if not has_ok_explanations(conn):
        raise NotFoundError(
            "there are no explanations to search yet; run `autolabel explain` first"
        )
    if mode != "keyword" and model is not None and not has_embeddings(conn, model):
        raise NotFoundError(
            f"explanations are not embedded with {model} yet; run `autolabel embed` "
            "(or search with --mode keyword)"
        )
    if filters.sae is not None and not sae_exists(conn, filters.sae):
        raise NotFoundError(
            f"no SAE named {filters.sae!r}; known: {', '.join(sae_names(conn)) or '(none)'}"
        )

def search(database: Database, query: str, *, mode: str = "hybrid",
           filters: SearchFilters = SearchFilters(), limit: int = 10,  # noqa: B008
           embedder: Embedder | None = None) -> list[SearchHit]:
    """Features whose explanations best match ``query``; see the module doc for the modes."""
    if mode not in MODES:
        raise InputError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
    if limit <= 0:
        raise InputError("limit must be at least 1")
    if not query or not query.strip():
        raise InputError("empty search query; give some words, e.g. 'months of the year'")
    model = None if mode == "keyword" else (embedder.name if embedder else LOCAL_MODEL)
    with database.engine.connect() as conn:
        _require_searchable(conn, mode, model, filters)
        qvec: np.ndarray | None = None
        index: VectorIndex | None = None
        mask: np.ndarray | None = None
        if mode != "keyword":
            index = vector_index(database, model or LOCAL_MODEL, conn)
            emb = embedder or get_embedder(model or LOCAL_MODEL)
            qvec = emb.embed([query])[0]
            mask = _semantic_mask(conn, index, filters)

        def fetch(depth: int) -> tuple[list[Candidate], bool]:
            lists: list[list[Candidate]] = []
            exhausted = True
            if mode != "semantic":
                # Hybrid fuses the AND matches only: OR matches on one generic word
                # ("words", "tokens") would outvote the semantic ranking; semantic gives recall.
                kw = keyword_candidates(conn, query, filters, depth, need=limit,
                                        fallback=mode == "keyword")
                exhausted &= len(kw) < depth
                lists.append(kw)
            if mode != "keyword":
                assert index is not None and qvec is not None
                sem = _drop_deleted(conn, database, index,
                                    semantic_candidates(index, qvec, depth, mask))
                exhausted &= len(sem) < depth
                lists.append(sem)
            return (lists[0] if len(lists) == 1 else rrf(lists)), exhausted

        start_depth = max(limit * 4, 50) if mode == "hybrid" else limit * 4
        picked = _until_enough(fetch, limit, start_depth)
        return _hydrate(conn, picked, filters, mode)
