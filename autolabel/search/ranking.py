"""Ranking: query terms, keyword and semantic candidates, reciprocal rank fusion, verdicts.

* keyword: SQLite FTS5 ``search_fts`` ranked by bm25, or PostgreSQL ``search_tsv`` ranked by
  ts_rank (both kept in sync by migration 0002's triggers, which index only ``ok``
  explanations). User text is reduced to quoted word terms, so any input is a valid query: all
  terms must match (AND); when that finds too little, any term may match (OR), ranked after.
* semantic: candidates from the persistent HNSW index (:mod:`autolabel.search.vectors`), then
  checked against the table (still there, ok, passing the filters) and re-scored exactly from
  the stored float32 vectors. When filters leave too few rows for the index's candidates to
  reach, the filtered rows are scanned exactly instead.
* hybrid (default): reciprocal rank fusion (k = 60) of the keyword AND ranking (no OR
  fallback: matches on one generic word would outvote the semantic ranking) and the semantic
  one.

One hit per explanation is ranked, then results are deduplicated per feature (best kept). Each
feature carries its label's verdict (:func:`autolabel.store.labels.feature_labels`): features
whose label is ``rejected`` are hidden unless asked for, a verdict filter keeps only the named
verdicts, and at equal relevance a trusted label ranks before a weak one, and so on.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from autolabel.db import Database, sqlite_path
from autolabel.embed import LOCAL_MODEL, Embedder, get_embedder
from autolabel.errors import InputError, NotFoundError
from autolabel.search.vectors import OpenIndex, open_index
from autolabel.store.labels import VERDICTS, Label, feature_labels
from autolabel.store.search import (
    Candidate,
    SearchFilters,
    filtered_vectors,
    has_embeddings,
    has_filters,
    has_ok_explanations,
    hit_rows,
    keyword_matches,
    live_candidates,
    sae_exists,
    sae_names,
)

MODES = ("hybrid", "keyword", "semantic")
RRF_K = 60
DEFAULT_VERDICTS = tuple(v for v in VERDICTS if v != "rejected")
VERDICT_ORDER = {"trusted": 0, "weak": 1, "at_floor": 2, "unscored": 3, "rejected": 4}
EXACT_AFTER = 4096  # index candidates fetched before scanning the filtered rows instead

_TERM = re.compile(r"[^\W_]+")
# Dropped from keyword queries (when something else remains): they match nearly everything.
STOPWORDS = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "is",
    "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "were", "with", "which",
    "who", "whom",
])


@dataclass
class SearchHit:
    """One feature found, via its best-ranked explanation, with the feature's label."""

    feature: str  # "SAE:INDEX"
    sae: str
    index: int
    layer: int | None
    explanation_id: int
    explanation: str  # the matching explanation (not always the feature's label)
    explainer: str
    score: float | None  # the feature's label's score under the filters' scorer (test split)
    floor: float | None  # that score's floor (a wrong explanation's score)
    density: float
    rank_score: float  # bm25 (negated, higher = better) / cosine / RRF, depending on mode
    mode: str
    rank: int = 0  # 1-based position in the results
    verdict: str = "unscored"  # the feature's label's verdict (see autolabel.store.labels)
    label: str | None = None  # the feature's label text (None when every candidate failed)
    llm_model: str = ""  # the matching explanation's LLM
    model_id: str | None = None  # the SAE's subject model
    null_p95: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    selected_on: str = ""


def parse_verdicts(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``trusted,weak`` -> ("trusted", "weak"); ``all`` -> every verdict, rejected included;
    None/empty -> None (the default: everything but rejected)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [v.strip().lower().replace(" ", "_") for v in items if v and v.strip()]
    if not names:
        return None
    if names == ["all"]:
        return VERDICTS
    unknown = [v for v in names if v not in VERDICTS]
    if unknown:
        raise InputError(f"unknown verdict {unknown[0]!r}; use any of {', '.join(VERDICTS)} "
                         "(comma-separated) or all")
    return tuple(dict.fromkeys(names))


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
# Semantic


def _unpack(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


def semantic_candidates(conn: Connection, index: OpenIndex, query_vector: np.ndarray,
                        depth: int, filters: SearchFilters) -> tuple[list[Candidate], bool]:
    """Up to ``depth`` explanations by cosine, best first, and whether there are no more.

    Index candidates are checked against the table and re-scored exactly. Past
    :data:`EXACT_AFTER` candidates under SQL filters (which few rows pass, then) the filtered
    rows are scanned exactly instead: the index knows nothing of SAEs, scores or flags.
    """
    q = np.ascontiguousarray(query_vector, dtype=np.float32).reshape(-1)
    if q.shape[0] != index.dim:
        raise NotFoundError(
            f"stored {index.model} vectors are {index.dim}-d but the query is {q.shape[0]}-d; "
            "re-run `autolabel embed` with the same model"
        )
    if depth > EXACT_AFTER and has_filters(filters):
        return exact_candidates(conn, index.model, q, depth, filters), True
    found = index.search(q, depth)
    live = live_candidates(conn, index.model, [k for k, _ in found], filters)
    out = [(h.explanation_id, h.feature_id, float(_unpack(h.vector) @ q))
           for h in (live.get(k) for k, _ in found) if h is not None]
    out.sort(key=lambda c: (-c[2], c[0]))
    return out, len(found) < depth


def exact_candidates(conn: Connection, model: str, q: np.ndarray, depth: int,
                     filters: SearchFilters) -> list[Candidate]:
    """Exact cosine top-``depth`` over every ok, filter-passing stored vector (a scan)."""
    ids: list[tuple[int, int]] = []
    blobs: list[bytes] = []
    for eid, fid, blob in filtered_vectors(conn, model, filters):
        ids.append((eid, fid))
        blobs.append(blob)
    if not ids:
        return []
    matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(ids), -1)
    scores = matrix @ q
    m = min(depth, len(ids))
    top = np.argpartition(-scores, m - 1)[:m] if m < len(ids) else np.arange(m)
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(ids[i][0], ids[i][1], float(scores[i])) for i in top]


# ---------------------------------------------------------------------------------------------
# Fusion, de-duplication, verdicts


def rrf(rankings: Sequence[Sequence[Candidate]], k: int = RRF_K) -> list[Candidate]:
    """Reciprocal rank fusion: score = sum over rankings of 1 / (k + rank), rank from 1.

    Equally relevant candidates (equal scores in one ranking) share the best of their ranks
    ("1, 2, 2, 4"), so a tie in both rankings stays a tie after fusion and the verdict order
    (:func:`prefer_trusted`) decides it, as it does in keyword and semantic mode; without
    this, ties would be broken by explanation id.
    """
    fused: dict[int, list[Any]] = {}
    for ranking in rankings:
        rank, last = 0, None
        for position, (eid, fid, score) in enumerate(ranking, start=1):
            if last is None or _tie_key(score) != last:
                rank, last = position, _tie_key(score)
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


class LabelCheck:
    """Per feature, its label (memoised across deeper fetches) and whether it is admitted."""

    def __init__(self, conn: Connection, filters: SearchFilters) -> None:
        self.session = Session(bind=conn)
        self.filters = filters
        self.allowed = set(filters.verdicts or DEFAULT_VERDICTS)
        self.labels: dict[int, Label] = {}

    def load(self, feature_ids: Sequence[int]) -> None:
        missing = [f for f in dict.fromkeys(feature_ids) if f not in self.labels]
        if missing:
            self.labels.update(feature_labels(self.session, missing, self.filters.scorer))

    def admits(self, feature_id: int) -> bool:
        label = self.labels[feature_id]
        if label.verdict not in self.allowed:
            return False
        minimum = self.filters.min_score
        return minimum is None or (label.score is not None and label.score >= minimum)


def _tie_key(score: float) -> float:
    """Relevance rounded so that float noise does not break a tie (bm25 / RRF ties are exact;
    cosines equal to 1e-9 are equally relevant)."""
    return round(score, 9)


def prefer_trusted(candidates: Sequence[Candidate], labels: dict[int, Label]) -> list[Candidate]:
    """Stable re-order: at equal relevance, trusted before weak before at floor, unscored."""
    order = {id(c): i for i, c in enumerate(candidates)}
    return sorted(candidates, key=lambda c: (
        -_tie_key(c[2]), VERDICT_ORDER.get(labels[c[1]].verdict, 9), order[id(c)]))


def _until_enough(fetch: Callable[[int], tuple[list[Candidate], bool]], check: LabelCheck,
                  limit: int, depth: int) -> list[Candidate]:
    """Fetch deeper until ``limit`` admitted features are found (plus any tied with the last
    one, so the verdict order can reach across the cut) or nothing more exists."""
    while True:
        ranked, exhausted = fetch(depth)
        admitted, complete = _admit(dedupe_features(ranked), check, limit)
        if complete or exhausted:
            return prefer_trusted(admitted, check.labels)[:limit]
        depth *= 4


def _admit(unique: Sequence[Candidate], check: LabelCheck,
           limit: int) -> tuple[list[Candidate], bool]:
    """Admitted candidates in order, labels loaded a chunk at a time (a label costs a few
    queries, so only as many as needed): done once ``limit`` are admitted and one beyond
    them ranks strictly lower (nothing further can tie into the cut)."""
    admitted: list[Candidate] = []
    chunk = limit + limit // 2 + 1
    for start in range(0, len(unique), chunk):
        part = unique[start:start + chunk]
        check.load([c[1] for c in part])
        for cand in part:
            if not check.admits(cand[1]):
                continue
            admitted.append(cand)
            if len(admitted) > limit and \
                    _tie_key(cand[2]) < _tie_key(admitted[limit - 1][2]):
                return admitted, True
    return admitted, False


# ---------------------------------------------------------------------------------------------
# Results


def _hydrate(conn: Connection, picked: Sequence[Candidate], check: LabelCheck,
             mode: str) -> list[SearchHit]:
    """The picked candidates as hits, in order, with their feature's label; candidates that
    no longer pass (changed since they were indexed) are dropped."""
    if not picked:
        return []
    rows = hit_rows(conn, [c[0] for c in picked], check.filters)
    hits: list[SearchHit] = []
    for eid, _, rank_score in picked:
        row = rows.get(eid)
        if row is None:
            continue
        label = check.labels[row.feature_id]
        hits.append(SearchHit(
            feature=f"{row.sae}:{row.index}", sae=row.sae, index=int(row.index),
            layer=row.layer, explanation_id=int(eid), explanation=row.text,
            explainer=row.explainer, score=label.score, floor=label.floor,
            density=float(row.density or 0.0), rank_score=float(rank_score), mode=mode,
            rank=len(hits) + 1, verdict=label.verdict, label=label.text,
            llm_model=row.llm_model or "", model_id=row.model_id, null_p95=label.null_p95,
            ci_low=label.ci_low, ci_high=label.ci_high, selected_on=label.selected_on,
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


def _check_arguments(query: str, mode: str, limit: int) -> None:
    if mode not in MODES:
        raise InputError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
    if limit <= 0:
        raise InputError("limit must be at least 1")
    if not query or not query.strip():
        raise InputError("empty search query; give some words, e.g. 'months of the year'")


_AHEAD: ThreadPoolExecutor | None = None
_AHEAD_LOCK = threading.Lock()


def _keyword_ahead(database: Database, query: str, filters: SearchFilters, depth: int,
                   need: int) -> Future[list[Candidate]] | None:
    """Start a hybrid search's first keyword fetch on its own connection, to run while the
    query is embedded: SQLite's full-text search and numpy's matrix products both release the
    GIL, so on two cores hybrid costs about the slower of the two, not their sum. None for an
    in-memory SQLite database, whose one connection cannot be shared between threads."""
    global _AHEAD
    if database.dialect == "sqlite" and sqlite_path(database.url) is None:
        return None
    with _AHEAD_LOCK:
        if _AHEAD is None:
            _AHEAD = ThreadPoolExecutor(max_workers=4, thread_name_prefix="autolabel-keyword")

    def fetch() -> list[Candidate]:
        with database.engine.connect() as conn:
            return keyword_candidates(conn, query, filters, depth, need=need, fallback=False)

    return _AHEAD.submit(fetch)


def search(database: Database, query: str, *, mode: str = "hybrid",
           filters: SearchFilters = SearchFilters(), limit: int = 10,  # noqa: B008
           embedder: Embedder | None = None) -> list[SearchHit]:
    """Features whose explanations best match ``query``; see the module doc for the modes."""
    _check_arguments(query, mode, limit)
    model = None if mode == "keyword" else (embedder.name if embedder else LOCAL_MODEL)
    start_depth = max(limit * 4, 50) if mode == "hybrid" else limit * 4
    with database.engine.connect() as conn:
        _require_searchable(conn, mode, model, filters)
        index: OpenIndex | None = None
        qvec: np.ndarray | None = None
        ahead = (_keyword_ahead(database, query, filters, start_depth, limit)
                 if mode == "hybrid" else None)
        if mode != "keyword":
            index = open_index(database, model or LOCAL_MODEL, conn)
            qvec = (embedder or get_embedder(model or LOCAL_MODEL)).embed([query])[0]

        def fetch(depth: int) -> tuple[list[Candidate], bool]:
            lists: list[list[Candidate]] = []
            exhausted = True
            if mode != "semantic":
                kw = (ahead.result() if ahead is not None and depth == start_depth else
                      keyword_candidates(conn, query, filters, depth, need=limit,
                                         fallback=mode == "keyword"))
                exhausted &= len(kw) < depth
                lists.append(kw)
            if mode != "keyword":
                assert index is not None and qvec is not None
                sem, done = semantic_candidates(conn, index, qvec, depth, filters)
                exhausted &= done
                lists.append(sem)
            return (lists[0] if len(lists) == 1 else rrf(lists)), exhausted

        check = LabelCheck(conn, filters)
        picked = _until_enough(fetch, check, limit, start_depth)
        return _hydrate(conn, picked, check, mode)
