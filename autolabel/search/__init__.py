"""Search features by their explanations: keyword (FTS5 / tsvector), semantic, hybrid (RRF).

:mod:`autolabel.search.ranking` holds the modes, fusion and verdict ordering;
:mod:`autolabel.search.vectors` the persistent, memory-mapped vector index; the SQL is
:mod:`autolabel.store.search`. :func:`index_explanations` is what ``autolabel embed`` runs:
embed what is missing, then bring the saved index up to the table.
"""

from __future__ import annotations

from collections.abc import Callable

from autolabel.db import Database
from autolabel.embed import Embedder, embed_missing
from autolabel.search.ranking import (
    DEFAULT_VERDICTS,
    MODES,
    RRF_K,
    STOPWORDS,
    SearchHit,
    dedupe_features,
    exact_candidates,
    keyword_candidates,
    parse_verdicts,
    prefer_trusted,
    query_terms,
    rrf,
    search,
    semantic_candidates,
)
from autolabel.search.vectors import (
    IndexMeta,
    OpenIndex,
    clear_open_indexes,
    index_dir,
    open_index,
    sync_index,
)
from autolabel.store.search import Candidate, SearchFilters, fts5_query, tsquery

__all__ = ["DEFAULT_VERDICTS", "MODES", "RRF_K", "STOPWORDS", "Candidate", "IndexMeta",
           "OpenIndex", "SearchFilters", "SearchHit", "clear_index_cache", "dedupe_features",
           "exact_candidates", "fts5_query", "index_dir", "index_explanations",
           "keyword_candidates", "open_index", "parse_verdicts", "prefer_trusted",
           "query_terms", "rrf", "search", "semantic_candidates", "sync_index", "tsquery"]


def clear_index_cache() -> None:
    """Forget every index opened by this process (tests, or to free memory)."""
    clear_open_indexes()


def index_explanations(database: Database, embedder: Embedder, *, batch_size: int = 256,
                       progress: Callable[[int, int], None] | None = None
                       ) -> tuple[int, IndexMeta | None]:
    """Embed every ok explanation without a vector (incremental), then add the new vectors to
    the saved index (or build it). Returns (vectors added, the index's meta or None)."""
    count = embed_missing(database, embedder, batch_size=batch_size, progress=progress)
    return count, sync_index(database, embedder.name)
