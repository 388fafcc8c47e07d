"""Keyword search: ranking, stemming, the OR fallback, and any text as a safe query."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from autolabel.db import Database
from autolabel.embed import embed_missing
from autolabel.errors import InputError
from autolabel.search import fts5_query, query_terms, search
from tests.search.helpers import HASH, NASTY, refs


def test_keyword_ranking_stemming_and_or_fallback(database: Database,
                                                  small: dict[str, Any]) -> None:
    # "month" matches "months" and "month" (porter stemming); AND of both terms ranks first.
    hits = search(database, "month names", mode="keyword", limit=5)
    assert hits[0].feature == "gemma-l9:1"
    assert set(refs(hits)) == {"gemma-l9:1", "gemma-l6:1"}
    # No explanation has both words: falls back to OR and still finds both features.
    hits = search(database, "court colour", mode="keyword")
    assert set(refs(hits)) == {"gemma-l6:3", "gemma-l9:7"}
    assert all(h.mode == "keyword" for h in hits)
    assert [h.rank for h in hits] == [1, 2]


@pytest.mark.parametrize("query", NASTY)
def test_any_text_is_a_valid_query(database: Database, small: dict[str, Any], query: str) -> None:
    if not query.strip():
        with pytest.raises(InputError):
            search(database, query, mode="keyword")
        return
    hits = search(database, query, mode="keyword")
    if "months" in query.lower() and "init" not in query:
        assert "gemma-l6:1" in refs(hits)
    add_hashed = embed_missing(database, HASH)
    assert add_hashed in (0, 6)
    search(database, query, mode="hybrid", embedder=HASH)
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM explanations")).scalar_one() == 7


def test_query_terms_and_fts5_query() -> None:
    assert query_terms('He said "NEAR" the - court:cases*') == ["he", "said", "near", "court",
                                                                "cases"]
    assert query_terms("the of") == ["the", "of"]  # only stopwords: keep them
    assert query_terms("!!! ---") == []
    assert fts5_query(["near", "and"], "OR") == 'text : ("near" OR "and")'


def test_symbol_only_query_finds_nothing_by_keyword(database: Database,
                                                    small: dict[str, Any]) -> None:
    assert search(database, ")))", mode="keyword") == []
