"""The search queries: keyword matches (FTS5 / tsvector), filters, vectors, hit details.

Everything :mod:`autolabel.search` asks the database, as plain SQL over one connection (one
search is one read; the FTS5 table and the tsvector column are migration 0002's, not ORM
models). Keyword matching takes already-cleaned word terms and quotes them again, so no input
can be parsed as query syntax. Filters are SQL over the aliases ``e`` (explanations), ``f``
(features) and ``s`` (saes). Vectors are streamed as stored rows: the in-process matrix (or a
future on-disk index) is built by the caller.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

# A candidate: (explanation id, feature id, raw score where higher is better)
Candidate = tuple[int, int, float]
# A stored vector: (explanation id, feature id, SAE id, explainer, dim, float32 blob)
VectorRow = tuple[int, int, int, str, int, bytes]

_WORD = re.compile(r"[^\W_]+")
_JOINS = "JOIN features f ON f.id = e.feature_id JOIN saes s ON s.id = f.sae_id"
_PARTITION = 65536  # vector rows fetched per round trip


@dataclass(frozen=True)
class SearchFilters:
    """Restrict hits; every set field must hold."""

    sae: str | None = None
    layer: int | None = None
    min_score: float | None = None
    scorer: str = "simulation"
    explainer: str | None = None
    flagged: str | None = None
    # Label verdicts to keep (None: all but rejected). Checked on the feature's label in
    # Python (autolabel.store.labels), not in SQL, so has_filters() ignores it.
    verdicts: tuple[str, ...] | None = None


@dataclass(frozen=True)
class HitRow:
    """What a result shows of one explanation and its feature."""

    explanation_id: int
    text: str
    explainer: str
    feature_id: int
    index: int
    density: float | None
    sae: str
    layer: int | None
    llm_model: str | None = None
    model_id: str | None = None


def has_filters(filters: SearchFilters) -> bool:
    """Whether any restricting field is set (the scorer alone restricts nothing)."""
    return any(v is not None for v in (filters.sae, filters.layer, filters.min_score,
                                       filters.explainer, filters.flagged))


def _filter_sql(filters: SearchFilters) -> tuple[list[str], dict[str, Any]]:
    """The filters as SQL conditions (over e, f, s) and their bound parameters."""
    where: list[str] = []
    params: dict[str, Any] = {}
    if filters.sae is not None:
        where.append("s.name = :f_sae")
        params["f_sae"] = filters.sae
    if filters.layer is not None:
        where.append("s.layer = :f_layer")
        params["f_layer"] = int(filters.layer)
    if filters.explainer is not None:
        where.append("e.explainer = :f_explainer")
        params["f_explainer"] = filters.explainer
    if filters.min_score is not None:
        where.append(
            "EXISTS (SELECT 1 FROM scores sc JOIN explanations e2 ON e2.id = sc.explanation_id"
            " WHERE e2.feature_id = f.id AND sc.scorer = :f_scorer"
            " AND sc.value >= :f_min_score)"
        )
        params["f_scorer"] = filters.scorer
        params["f_min_score"] = float(filters.min_score)
    if filters.flagged is not None:
        where.append(
            "EXISTS (SELECT 1 FROM flags fl WHERE fl.feature_id = f.id"
            " AND fl.category = :f_flagged)"
        )
        params["f_flagged"] = filters.flagged
    return where, params


# ---------------------------------------------------------------------------------------------
# Keyword


def fts5_query(terms: Sequence[str], op: str = "AND") -> str:
    """An FTS5 MATCH expression over the text column: each term quoted (so NEAR, AND, '-', ':',
    '*' are literal words), joined by AND or OR."""
    if not terms:
        raise ValueError("no terms")
    joined = f" {op} ".join('"' + t.replace('"', '""') + '"' for t in terms)
    return f"text : ({joined})"


def _fts5_phrase(value: str) -> str | None:
    """A quoted FTS5 phrase for a filter value, or None when it has no word characters."""
    if not _WORD.search(value):
        return None
    return '"' + value.replace('"', '""') + '"'


def tsquery(terms: Sequence[str], op: str = "&") -> str:
    """A PostgreSQL to_tsquery expression: word-only terms joined by & or |."""
    return f" {op} ".join(terms)


def keyword_matches(conn: Connection, terms: Sequence[str], op: str, filters: SearchFilters,
                    depth: int) -> list[Candidate]:
    """Up to ``depth`` ok explanations matching all (``op`` "AND") or any ("OR") of the
    terms, best first, on whichever full-text index the database has."""
    if conn.dialect.name == "postgresql":
        return _keyword_postgres(conn, tsquery(terms, "&" if op == "AND" else "|"), filters,
                                 depth)
    return _keyword_sqlite(conn, fts5_query(terms, op), filters, depth)


def _keyword_sqlite(conn: Connection, match: str, filters: SearchFilters,
                    depth: int) -> list[Candidate]:
    """FTS5 ranked by bm25 (negated: higher is better); unfiltered queries never touch the
    feature tables until the top ``depth`` are known."""
    if not has_filters(filters):
        sql = (
            "SELECT e.id, e.feature_id, t.r FROM ("
            " SELECT rowid AS id, rank AS r FROM search_fts WHERE search_fts MATCH :q"
            " ORDER BY rank LIMIT :n) t JOIN explanations e ON e.id = t.id ORDER BY t.r, e.id"
        )
        rows = conn.execute(text(sql), {"q": match, "n": depth}).all()
    else:
        # Push the SAE / layer filters into the FTS query (columns of search_fts); the SQL
        # conditions below still check them exactly.
        parts = [match]
        if filters.sae is not None and (phrase := _fts5_phrase(filters.sae)):
            parts.append(f"sae : {phrase}")
        if filters.layer is not None:
            parts.append(f'layer : "{int(filters.layer)}"')
        where, params = _filter_sql(filters)
        sql = (
            "SELECT e.id, e.feature_id, search_fts.rank AS r FROM search_fts"
            f" JOIN explanations e ON e.id = search_fts.rowid {_JOINS}"
            " WHERE search_fts MATCH :q AND e.status = 'ok'"
            + "".join(f" AND {w}" for w in where)
            + " ORDER BY r, e.id LIMIT :n"
        )
        rows = conn.execute(text(sql), {"q": " AND ".join(parts), "n": depth, **params}).all()
    return [(int(i), int(f), -float(r)) for i, f, r in rows]


def _keyword_postgres(conn: Connection, tsq: str, filters: SearchFilters,
                      depth: int) -> list[Candidate]:
    """The tsvector column ranked by ts_rank."""
    where, params = _filter_sql(filters)
    sql = (
        "SELECT e.id, e.feature_id, ts_rank(e.search_tsv, q) AS r FROM explanations e"
        f" CROSS JOIN to_tsquery('english', :q) AS q {_JOINS}"
        " WHERE e.search_tsv @@ q AND e.status = 'ok'"
        + "".join(f" AND {w}" for w in where)
        + " ORDER BY r DESC, e.id LIMIT :n"
    )
    rows = conn.execute(text(sql), {"q": tsq, "n": depth, **params}).all()
    return [(int(i), int(f), float(r)) for i, f, r in rows]


# ---------------------------------------------------------------------------------------------
# Vectors


def embedding_token(conn: Connection, model: str) -> int:
    """Max embedding id of the model: O(log n) on the model index (a count(*) would scan it,
    ~150 ms at 1M rows). New vectors raise it; deletions are caught by
    :func:`alive_explanations` when a deleted row is about to be shown."""
    return int(conn.execute(
        text("SELECT coalesce(max(id), 0) FROM embeddings WHERE model = :m"), {"m": model},
    ).scalar_one())


@dataclass(frozen=True)
class EmbeddingState:
    """What identifies a model's vector rows, for telling whether a saved index still fits:
    the first row and the row the index was made up to, each with its vector's digest (SQLite
    reuses ids: a table emptied and refilled restarts at 1), the max id and the count."""

    count: int
    dim: int
    max_id: int
    first_id: int
    first_explanation: int
    first_digest: str  # digest of the first row's vector
    digest_at: str  # digest of the vector of row ``at`` (asked for), "" when that row is gone


def vector_digest(blob: bytes | None) -> str:
    """A short content digest of one stored vector."""
    return "" if blob is None else hashlib.sha1(bytes(blob)).hexdigest()[:16]


def embedding_state(conn: Connection, model: str, at: int = 0) -> EmbeddingState:
    """The identity of ``model``'s vector rows (count is an index scan: ~0.14 s at 1M, so this
    runs when an index is opened, not per query; per query :func:`embedding_token` suffices).

    The width is the first row's: ``max(dim)`` read every row, vectors included (1.66 s
    against 0.14 s at 1M in SQLite), and index builds refuse mixed widths anyway.
    """
    count, max_id = conn.execute(text(
        "SELECT count(*), coalesce(max(id), 0) FROM embeddings WHERE model = :m"),
        {"m": model}).one()
    first = conn.execute(text(
        "SELECT id, explanation_id, vector, dim FROM embeddings WHERE model = :m ORDER BY id"
        " LIMIT 1"), {"m": model}).first()
    dim = int(first[3]) if first else 0
    blob = conn.execute(text("SELECT vector FROM embeddings WHERE id = :i AND model = :m"),
                        {"i": int(at), "m": model}).scalar() if at else None
    return EmbeddingState(count=int(count), dim=int(dim), max_id=int(max_id),
                          first_id=int(first[0]) if first else 0,
                          first_explanation=int(first[1]) if first else 0,
                          first_digest=vector_digest(first[2] if first else None),
                          digest_at=vector_digest(blob))


def vectors_after(conn: Connection, model: str, after: int) -> Iterator[tuple[int, int, bytes]]:
    """(embedding id, dim, float32 blob) of ``model``'s rows with id > ``after``, by id,
    streamed in large partitions (index builds read a million rows this way)."""
    sql = text("SELECT id, dim, vector FROM embeddings WHERE model = :m AND id > :a ORDER BY id")
    for part in conn.execute(sql, {"m": model, "a": int(after)}).partitions(_PARTITION):
        for eid, dim, blob in part:
            yield int(eid), int(dim), bytes(blob)


@dataclass(frozen=True)
class VectorHit:
    """An index candidate that still exists, is ok and passes the filters."""

    embedding_id: int
    explanation_id: int
    feature_id: int
    vector: bytes


def live_candidates(conn: Connection, model: str, embedding_ids: Sequence[int],
                    filters: SearchFilters) -> dict[int, VectorHit]:
    """Those index keys whose row still exists under ``model``, whose explanation is ok and
    passes the filters, with the stored float32 vector (to re-score exactly), by key."""
    if not embedding_ids:
        return {}
    where, params = _filter_sql(filters)
    sql = text(
        "SELECT m.id, e.id, e.feature_id, m.vector FROM embeddings m"
        f" JOIN explanations e ON e.id = m.explanation_id {_JOINS}"
        " WHERE m.id IN :ids AND m.model = :m AND e.status = 'ok'"
        + "".join(f" AND {w}" for w in where)
    ).bindparams(bindparam("ids", expanding=True))
    rows = conn.execute(sql, {"ids": [int(i) for i in embedding_ids], "m": model, **params})
    return {int(r[0]): VectorHit(int(r[0]), int(r[1]), int(r[2]), bytes(r[3])) for r in rows}


def filtered_vectors(conn: Connection, model: str,
                     filters: SearchFilters) -> Iterator[tuple[int, int, bytes]]:
    """(explanation id, feature id, blob) of every ok, filter-passing vector of ``model``:
    the exact scan when filters leave too few rows for the index's candidates to reach."""
    where, params = _filter_sql(filters)
    sql = text(
        "SELECT e.id, e.feature_id, m.vector FROM embeddings m"
        f" JOIN explanations e ON e.id = m.explanation_id {_JOINS}"
        " WHERE m.model = :m AND e.status = 'ok'" + "".join(f" AND {w}" for w in where)
    )
    for part in conn.execute(sql, {"m": model, **params}).partitions(_PARTITION):
        for eid, fid, blob in part:
            yield int(eid), int(fid), bytes(blob)


def alive_explanations(conn: Connection, model: str, explanation_ids: Sequence[int]) -> set[int]:
    """Those of the explanations that still have a vector under ``model``."""
    sql = text(
        "SELECT explanation_id FROM embeddings WHERE model = :m AND explanation_id IN :ids"
    ).bindparams(bindparam("ids", expanding=True))
    return {int(r[0]) for r in conn.execute(sql, {"m": model, "ids": list(explanation_ids)})}


def vector_rows(conn: Connection, model: str) -> Iterator[VectorRow]:
    """Every stored vector of ``model`` whose explanation is ok, by explanation id, streamed
    in large partitions (a million rows never sit in one result list)."""
    sql = text(
        "SELECT m.explanation_id, e.feature_id, f.sae_id, e.explainer, m.dim, m.vector"
        " FROM embeddings m JOIN explanations e ON e.id = m.explanation_id"
        " JOIN features f ON f.id = e.feature_id"
        " WHERE m.model = :m AND e.status = 'ok' ORDER BY m.explanation_id"
    )
    for part in conn.execute(sql, {"m": model}).partitions(_PARTITION):
        for eid, fid, sid, explainer, dim, blob in part:
            yield eid, fid, sid, explainer, dim, bytes(blob)


def sae_ids_matching(conn: Connection, filters: SearchFilters) -> list[int]:
    """Ids of the SAEs allowed by the filters' SAE name and layer."""
    where, params = _filter_sql(SearchFilters(sae=filters.sae, layer=filters.layer))
    return [r[0] for r in conn.execute(
        text("SELECT s.id FROM saes s WHERE " + " AND ".join(where)), params)]


def feature_ids_matching(conn: Connection, filters: SearchFilters) -> list[int]:
    """Ids of the features allowed by the filters' minimum score and flag category."""
    where, params = _filter_sql(SearchFilters(min_score=filters.min_score,
                                              scorer=filters.scorer, flagged=filters.flagged))
    return [r[0] for r in conn.execute(
        text("SELECT f.id FROM features f WHERE " + " AND ".join(where)), params)]


# ---------------------------------------------------------------------------------------------
# Hits


def hit_rows(conn: Connection, explanation_ids: Sequence[int],
             filters: SearchFilters) -> dict[int, HitRow]:
    """Details of those explanations that are (still) ok and pass the filters, by id."""
    where, params = _filter_sql(filters)
    sql = text(
        'SELECT e.id, e.text, e.explainer, f.id, f."index", f.density, s.name, s.layer,'
        " e.llm_model, s.model_id"
        f" FROM explanations e {_JOINS} WHERE e.id IN :ids AND e.status = 'ok'"
        + "".join(f" AND {w}" for w in where)
    ).bindparams(bindparam("ids", expanding=True))
    return {r[0]: HitRow(*r) for r in conn.execute(sql, {"ids": list(explanation_ids),
                                                          **params})}


def best_scores(conn: Connection, feature_ids: Sequence[int],
                scorer: str) -> dict[int, tuple[float, float | None]]:
    """Per feature, the best ``scorer`` score of its explanations and that score's floor."""
    if not feature_ids:
        return {}
    sql = text(
        "SELECT e.feature_id, sc.value, sc.floor_value FROM scores sc"
        " JOIN explanations e ON e.id = sc.explanation_id"
        " WHERE e.feature_id IN :fids AND sc.scorer = :scorer AND sc.value IS NOT NULL"
    ).bindparams(bindparam("fids", expanding=True))
    best: dict[int, tuple[float, float | None]] = {}
    for fid, value, floor in conn.execute(sql, {"fids": list(feature_ids), "scorer": scorer}):
        if fid not in best or value > best[fid][0]:
            best[fid] = (float(value), None if floor is None else float(floor))
    return best


# ---------------------------------------------------------------------------------------------
# What there is to search


def has_ok_explanations(conn: Connection) -> bool:
    """Whether any explanation could be found at all."""
    return bool(conn.execute(text(
        "SELECT count(*) FROM (SELECT 1 FROM explanations WHERE status = 'ok' LIMIT 1) t"
    )).scalar_one())


def has_embeddings(conn: Connection, model: str) -> bool:
    """Whether any vector of ``model`` is stored."""
    return bool(conn.execute(text(
        "SELECT count(*) FROM (SELECT 1 FROM embeddings WHERE model = :m LIMIT 1) t"
    ), {"m": model}).scalar_one())


def sae_exists(conn: Connection, name: str) -> bool:
    """Whether an SAE of exactly this name is stored."""
    return conn.execute(text("SELECT 1 FROM saes WHERE name = :n"), {"n": name}).first() \
        is not None


def sae_names(conn: Connection, limit: int = 5) -> list[str]:
    """The first few SAE names, alphabetically (to suggest in an error)."""
    return [r[0] for r in conn.execute(text("SELECT name FROM saes ORDER BY name LIMIT :n"),
                                       {"n": limit})]
