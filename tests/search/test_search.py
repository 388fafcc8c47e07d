"""search(): filters, hit fields, arguments, empty databases, the semantic cache, hybrid."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select, update

from autolabel.db import Database, Embedding, Explanation
from autolabel.embed import embed_missing
from autolabel.errors import InputError, NotFoundError
from autolabel.search import SearchFilters, search
from tests.search.helpers import HASH, add_explanation, add_feature, refs


@pytest.mark.parametrize("mode", ["keyword", "semantic", "hybrid"])
def test_filters(database: Database, small: dict[str, Any], mode: str) -> None:
    embed_missing(database, HASH)

    def run(**kw: Any) -> list[str]:
        return refs(search(database, "months", mode=mode, filters=SearchFilters(**kw),
                           limit=10, embedder=HASH))

    everything = run()
    assert {"gemma-l6:1", "gemma-l9:1"} <= set(everything)
    assert set(run(sae="gemma-l9")) <= {"gemma-l9:1", "gemma-l9:7"}
    assert "gemma-l9:1" in run(sae="gemma-l9")
    assert set(run(layer=6)) <= {"gemma-l6:1", "gemma-l6:2", "gemma-l6:3"}
    assert run(layer=6)[0] == "gemma-l6:1"
    assert run(layer=12) == []
    assert run(min_score=0.5) == ["gemma-l6:1"]  # best simulation score 0.7 >= 0.5
    assert set(run(min_score=0.1)) == {"gemma-l6:1", "gemma-l9:1"}
    assert run(min_score=0.8) == []
    assert run(min_score=0.8, scorer="detection") == ["gemma-l6:1"]
    assert run(explainer="tokens") == ["gemma-l6:1"]
    assert run(explainer="nope") == []
    flagged = refs(search(database, "pronouns", mode=mode, embedder=HASH,
                          filters=SearchFilters(flagged="gender")))
    assert flagged == ["gemma-l6:2"]
    assert run(flagged="gender") in ([], ["gemma-l6:2"])  # only the flagged feature may appear
    assert run(flagged="race") == []
    assert run(sae="gemma-l6", layer=6, min_score=0.3, explainer="llm") == ["gemma-l6:1"]


def test_unknown_sae_filter_is_a_clear_error(database: Database, small: dict[str, Any]) -> None:
    with pytest.raises(NotFoundError, match="no SAE named 'gemma-l7'; known: gemma-l6, gemma-l9"):
        search(database, "months", mode="keyword", filters=SearchFilters(sae="gemma-l7"))


def test_hit_fields_and_dedupe(database: Database, small: dict[str, Any]) -> None:
    hits = search(database, "months", mode="keyword", filters=SearchFilters(layer=6))
    assert len(hits) == 1  # two matching explanations of one feature -> one hit
    hit = hits[0]
    assert (hit.feature, hit.sae, hit.index, hit.layer) == ("gemma-l6:1", "gemma-l6", 1, 6)
    assert hit.explanation_id in (small["explanations"]["months"],
                                  small["explanations"]["months_tok"])
    assert (hit.score, hit.floor) == (0.7, 0.1)  # the feature's best simulation score
    assert hit.density == pytest.approx(0.002)
    assert hit.rank_score > 0 and hit.mode == "keyword" and hit.rank == 1
    detection = search(database, "months", mode="keyword",
                       filters=SearchFilters(layer=6, scorer="detection"))[0]
    assert (detection.score, detection.floor) == (0.9, 0.2)
    unscored = search(database, "colour", mode="keyword")[0]
    assert (unscored.score, unscored.floor) == (None, None)


def test_limit_and_bad_arguments(database: Database, small: dict[str, Any]) -> None:
    assert len(search(database, "months names colour court pronouns", mode="keyword",
                      limit=2)) == 2
    with pytest.raises(InputError, match="mode"):
        search(database, "x", mode="fuzzy")
    with pytest.raises(InputError, match="limit"):
        search(database, "x", limit=0)


def test_empty_database_says_what_to_run(database: Database) -> None:
    for mode in ("keyword", "semantic", "hybrid"):
        with pytest.raises(NotFoundError, match="run `autolabel explain`"):
            search(database, "months", mode=mode, embedder=HASH)


def test_unembedded_database_says_what_to_run(database: Database,
                                              small: dict[str, Any]) -> None:
    for mode in ("semantic", "hybrid"):
        with pytest.raises(NotFoundError, match="run `autolabel embed`"):
            search(database, "months", mode=mode, embedder=HASH)
    assert search(database, "months", mode="keyword")  # keyword needs no embeddings


def test_semantic_cache_follows_new_and_changed_embeddings(database: Database,
                                                           small: dict[str, Any]) -> None:
    embed_missing(database, HASH)
    assert search(database, "violet indigo", mode="semantic", embedder=HASH)[0].feature != \
        "gemma-l6:9"
    sae = small["saes"][0]
    fid = add_feature(database, sae, 9)
    eid = add_explanation(database, fid, "violet indigo")
    assert embed_missing(database, HASH) == 1
    top = search(database, "violet indigo", mode="semantic", embedder=HASH)[0]
    assert top.feature == "gemma-l6:9" and top.rank_score == pytest.approx(1.0, abs=1e-5)
    # Changing the text drops the stale vector (trigger); the cache notices the change.
    with database.session() as s:
        s.execute(update(Explanation).where(Explanation.id == eid).values(text="chess openings"))
    with database.engine.connect() as conn:
        assert conn.execute(select(Embedding.id).where(Embedding.explanation_id == eid)).all() \
            == []
    hits = search(database, "violet indigo", mode="semantic", embedder=HASH)
    assert "gemma-l6:9" not in refs(hits)
    assert embed_missing(database, HASH) == 1
    assert search(database, "chess openings", mode="semantic", embedder=HASH)[0].feature == \
        "gemma-l6:9"


def test_hybrid_fuses_both_rankings(database: Database, small: dict[str, Any]) -> None:
    embed_missing(database, HASH)
    hits = search(database, "court citations", embedder=HASH)
    assert hits[0].feature == "gemma-l6:3" and hits[0].mode == "hybrid"
    # Ranked first by both: 1/(60+1) + 1/(60+1).
    assert hits[0].rank_score == pytest.approx(2 / 61)


def test_hybrid_keyword_fetch_runs_beside_the_embedding_with_the_same_hits(
        database: Database, small: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The first keyword fetch runs on its own connection while the query is embedded; the
    hits are those of doing one after the other."""
    from autolabel.search import ranking

    embed_missing(database, HASH)
    seen: list[str] = []
    fetch = ranking.keyword_candidates

    def keyword(*args: Any, **kwargs: Any) -> Any:
        seen.append(threading.current_thread().name)
        return fetch(*args, **kwargs)

    monkeypatch.setattr(ranking, "keyword_candidates", keyword)
    together = search(database, "court citations months", embedder=HASH)
    assert seen and all(name.startswith("autolabel-keyword") for name in seen)
    monkeypatch.setattr(ranking, "_keyword_ahead", lambda *args: None)
    seen.clear()
    apart = search(database, "court citations months", embedder=HASH)
    assert seen == [threading.current_thread().name]
    assert together == apart


def test_hybrid_on_in_memory_sqlite_stays_on_its_one_connection() -> None:
    from autolabel import db as dbm
    from tests.search.helpers import add_sae

    memory = dbm.open_database("sqlite://")
    add_explanation(memory, add_feature(memory, add_sae(memory, "mem", 1), 1), "court cases")
    embed_missing(memory, HASH)
    assert [h.feature for h in search(memory, "court", embedder=HASH)] == ["mem:1"]
