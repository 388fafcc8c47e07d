"""Search: FTS index and triggers, filters, semantic cache, hybrid relevance, PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, text, update

from autolabel import db as dbm
from autolabel.db import Audit, Database, Embedding, Explanation, Feature, Flag, SAERecord, Score
from autolabel.embed import HashEmbedder, embed_missing
from autolabel.errors import InputError, NotFoundError
from autolabel.search import (
    SearchFilters,
    clear_index_cache,
    fts5_query,
    query_terms,
    search,
)

HASH = HashEmbedder()


# ---------------------------------------------------------------------------------------------
# Helpers


def add_sae(database: Database, name: str, layer: int | None = 6) -> int:
    with database.session() as s:
        sae = SAERecord(name=name, source="test", hook_name=f"blocks.{layer}.hook_resid_post",
                        layer=layer, d_in=16, d_sae=4096, architecture="topk",
                        content_hash=dbm.content_hash(name))
        s.add(sae)
        s.flush()
        return sae.id


def add_feature(database: Database, sae_id: int, index: int, density: float = 0.01) -> int:
    with database.session() as s:
        feature = Feature(sae_id=sae_id, index=index, density=density)
        s.add(feature)
        s.flush()
        return feature.id


def add_explanation(database: Database, feature_id: int, body: str | None, *,
                    explainer: str = "llm", status: str = "ok", candidate: int = 0) -> int:
    with database.session() as s:
        exp = Explanation(feature_id=feature_id, explainer=explainer, text=body, status=status,
                          candidate=candidate)
        s.add(exp)
        s.flush()
        return exp.id


def add_score(database: Database, explanation_id: int, value: float, floor: float,
              scorer: str = "simulation") -> None:
    with database.session() as s:
        s.add(Score(explanation_id=explanation_id, scorer=scorer, value=value,
                    floor_value=floor))


def add_flag(database: Database, sae_id: int, feature_id: int, category: str) -> None:
    with database.session() as s:
        audit = Audit(sae_id=sae_id, config_hash="x", pairs="builtin")
        s.add(audit)
        s.flush()
        s.add(Flag(audit_id=audit.id, feature_id=feature_id, category=category, tier=1))


def refs(hits: Sequence[Any]) -> list[str]:
    return [h.feature for h in hits]


def fts_rows(database: Database) -> dict[int, str]:
    with database.engine.connect() as conn:
        return dict(conn.execute(text("SELECT rowid, text FROM search_fts")).all())


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_index_cache()
    yield
    clear_index_cache()


@pytest.fixture
def database(sqlite_url: str) -> Iterator[Database]:
    database = dbm.open_database(sqlite_url)
    yield database
    database.close()


@pytest.fixture
def small(database: Database) -> dict[str, Any]:
    """Two SAEs, a handful of features with scores, flags and several explainers."""
    a, b = add_sae(database, "gemma-l6", 6), add_sae(database, "gemma-l9", 9)
    f = {
        "months": add_feature(database, a, 1, density=0.002),
        "pronouns": add_feature(database, a, 2),
        "court": add_feature(database, a, 3),
        "months9": add_feature(database, b, 1),
        "colours9": add_feature(database, b, 7),
    }
    e = {
        "months": add_explanation(database, f["months"], "names of months like January"),
        "months_tok": add_explanation(database, f["months"], "months of the year tokens",
                                      explainer="tokens"),
        "pronouns": add_explanation(database, f["pronouns"], "female pronouns she and her"),
        "court": add_explanation(database, f["court"], "citations of court cases"),
        "months9": add_explanation(database, f["months9"], "month names in dates"),
        "colours9": add_explanation(database, f["colours9"], "colour words red green blue"),
        "broken": add_explanation(database, f["court"], None, status="parse_error",
                                  candidate=1),
    }
    add_score(database, e["months"], 0.4, 0.05)
    add_score(database, e["months_tok"], 0.7, 0.1)
    add_score(database, e["months_tok"], 0.9, 0.2, scorer="detection")
    add_score(database, e["months9"], 0.2, 0.01)
    add_flag(database, a, f["pronouns"], "gender")
    return {"saes": (a, b), "features": f, "explanations": e}


# ---------------------------------------------------------------------------------------------
# Schema


def test_drift_clean_after_search_migration(database: Database) -> None:
    assert dbm.current_revision(database.engine) == dbm.head_revision()
    assert dbm.schema_drift(database.engine) == []
    assert dbm.check_database(database)["drift"] == []


def test_migration_backfills_existing_rows(sqlite_url: str) -> None:
    database = dbm.open_database(sqlite_url, migrate=False)
    dbm.upgrade(database.engine, "0001")
    sae = add_sae(database, "old", 3)
    feature = add_feature(database, sae, 5)
    ok = add_explanation(database, feature, "legacy citations of statutes")
    add_explanation(database, feature, "refused text", status="refused", candidate=1)
    dbm.upgrade(database.engine)
    assert fts_rows(database) == {ok: "legacy citations of statutes"}
    hits = search(database, "statutes", mode="keyword")
    assert refs(hits) == ["old:5"] and hits[0].layer == 3
    from alembic import command

    with database.engine.begin() as conn:
        command.downgrade(dbm.alembic_config(conn), "0001")
    with database.engine.connect() as conn:
        names = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}
    assert not any(n.startswith("search_") for n in names)
    dbm.upgrade(database.engine)  # back up again: the round trip leaves no drift
    assert dbm.schema_drift(database.engine) == []
    assert fts_rows(database) == {ok: "legacy citations of statutes"}
    database.close()


# ---------------------------------------------------------------------------------------------
# Keyword index and triggers


def test_only_ok_explanations_are_indexed(database: Database, small: dict[str, Any]) -> None:
    rows = fts_rows(database)
    assert small["explanations"]["broken"] not in rows
    assert len(rows) == 6


def test_triggers_follow_insert_update_delete(database: Database, small: dict[str, Any]) -> None:
    e, f = small["explanations"], small["features"]
    new = add_explanation(database, f["colours9"], "shades of purple", candidate=3)
    assert refs(search(database, "purple", mode="keyword")) == ["gemma-l9:7"]

    with database.session() as s:
        s.execute(update(Explanation).where(Explanation.id == new).values(text="teal hues"))
    assert search(database, "purple", mode="keyword") == []
    assert refs(search(database, "teal", mode="keyword")) == ["gemma-l9:7"]

    with database.session() as s:  # stops being ok -> leaves the index
        s.execute(update(Explanation).where(Explanation.id == new).values(status="error"))
    assert search(database, "teal", mode="keyword") == []
    with database.session() as s:  # ... and comes back
        s.execute(update(Explanation).where(Explanation.id == new).values(status="ok"))
    assert refs(search(database, "teal", mode="keyword")) == ["gemma-l9:7"]

    with database.session() as s:
        s.execute(delete(Explanation).where(Explanation.id == new))
    assert search(database, "teal", mode="keyword") == []

    with database.session() as s:  # cascade from the feature also cleans the index
        s.execute(delete(Feature).where(Feature.id == f["court"]))
    assert e["court"] not in fts_rows(database)
    assert search(database, "court", mode="keyword") == []

    with database.session() as s:  # SAE rename keeps the FTS sae column (and filter) in sync
        s.execute(update(SAERecord).where(SAERecord.name == "gemma-l9").values(name="renamed"))
    hits = search(database, "month", mode="keyword", filters=SearchFilters(sae="renamed"))
    assert refs(hits) == ["renamed:1"]
    with database.engine.connect() as conn:
        saes = {r[0] for r in conn.execute(text("SELECT sae FROM search_fts"))}
    assert saes == {"gemma-l6", "renamed"}


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


NASTY = [
    '"unbalanced quote', "NEAR(months year, 2)", "-months", "text:months", "sae : gemma",
    "month*", "months AND OR NOT", "))) (((", "'; DROP TABLE explanations; --", "^months",
    "{text} : months", "months + year", "__init__", "", " ", "😀 months 😀", "ÉTÉ månad",
    "a" * 5000, "NEAR", "AND", "\x00months",
]


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


# ---------------------------------------------------------------------------------------------
# Filters and result fields


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


# ---------------------------------------------------------------------------------------------
# Empty / unindexed databases, semantic cache


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


# ---------------------------------------------------------------------------------------------
# Labelled relevance with the real model

CORPUS = [
    "names of months such as January, February and March",
    "female pronouns like she, her and hers",
    "male pronouns he, him and his",
    "citations of court cases, e.g. Smith v. Jones, 410 U.S. 113",
    "Python keywords such as def, class, return and import",
    "closing brackets and parentheses at the end of expressions",
    "colour words like red, green, blue and yellow",
    "French words and articles such as le, la, les, et, bonjour",
    "numbers written as digits, especially years and counts",
    "days of the week: Monday, Tuesday, Friday",
    "chemical element names such as oxygen, carbon and hydrogen",
    "URLs and web addresses beginning with http",
    "email addresses containing the @ sign",
    "negation words: not, never, no",
    "currency amounts with dollar signs and prices",
    "first-person plural pronouns we and us",
    "mathematical operators like plus, minus and equals signs",
    "HTML tags such as <div> and <p>",
    "country names, e.g. France, Germany, Japan",
    "animal names such as dog, cat and horse",
    "words about weather: rain, snow, storms",
    "sports terms like goal, match and tournament",
    "medical terms for diseases and symptoms",
    "the token 'the' at the start of sentences",
    "question marks ending interrogative sentences",
    "SQL keywords SELECT, FROM and WHERE",
    "family members: mother, father, sister, brother",
    "food and cooking ingredients like flour, sugar, butter",
    "musical instruments such as piano, guitar and violin",
    "emotions such as happiness, anger and sadness",
]

# query -> index into CORPUS (the feature index); True = a synonym query sharing no content word
QUERIES: list[tuple[str, int, bool]] = [
    ("lawsuit references", 3, True),
    ("calendar months", 0, False),
    ("words referring to women", 1, True),
    ("programming language reserved words", 4, True),
    ("closing parenthesis", 5, False),
    ("hues and shades", 6, True),
    ("French vocabulary", 7, False),
    ("numeric digits", 8, False),
    ("pets and livestock", 19, True),
    ("human feelings", 29, True),
]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    from autolabel.embed import LocalEmbedder

    path: Path = tmp_path_factory.mktemp("labelled") / "labelled.db"
    database = dbm.open_database(f"sqlite:///{path}")
    sae = add_sae(database, "minilm-test", 6)
    for index, body in enumerate(CORPUS):
        add_explanation(database, add_feature(database, sae, index), body)
    assert embed_missing(database, LocalEmbedder()) == len(CORPUS)
    yield database
    database.close()


@pytest.mark.slow
def test_labelled_relevance_hybrid_top3(labelled: Database) -> None:
    from autolabel.embed import LocalEmbedder

    embedder = LocalEmbedder()
    misses_keyword, caught_semantic, failures = [], [], []
    for query, target, synonym in QUERIES:
        want = f"minilm-test:{target}"
        hybrid = refs(search(labelled, query, limit=3, embedder=embedder))
        keyword = refs(search(labelled, query, mode="keyword", limit=3))
        semantic = refs(search(labelled, query, mode="semantic", limit=3, embedder=embedder))
        if want not in hybrid:
            failures.append((query, hybrid))
        if synonym and want not in keyword:
            misses_keyword.append(query)
            if want in semantic:
                caught_semantic.append(query)
    assert failures == []
    # Keyword search alone misses synonym queries that the embeddings catch.
    assert len(misses_keyword) >= 4, misses_keyword
    assert caught_semantic == misses_keyword


@pytest.mark.slow
def test_default_embedder_is_the_local_model(labelled: Database) -> None:
    hits = search(labelled, "lawsuit references", limit=1)  # no embedder given: MiniLM
    assert refs(hits) == ["minilm-test:3"]


# ---------------------------------------------------------------------------------------------
# PostgreSQL


@pytest.mark.postgres
def test_postgres_search_path(pg_url: str) -> None:
    database = dbm.open_database(pg_url)
    try:
        assert database.dialect == "postgresql"
        assert dbm.schema_drift(database.engine) == []
        a, b = add_sae(database, "pg-l6", 6), add_sae(database, "pg-l9", 9)
        f1, f2, f3 = (add_feature(database, a, 1), add_feature(database, a, 2),
                      add_feature(database, b, 3))
        e1 = add_explanation(database, f1, "names of months like January")
        add_explanation(database, f2, "citations of court cases")
        add_explanation(database, f3, "month names in dates")
        add_explanation(database, f3, "refused", status="refused", candidate=1)
        add_score(database, e1, 0.6, 0.1)
        add_flag(database, a, f2, "gender")

        assert set(refs(search(database, "months", mode="keyword"))) == {"pg-l6:1", "pg-l9:3"}
        assert search(database, "refused", mode="keyword") == []
        for query in NASTY[:12]:
            search(database, query, mode="keyword")
        assert refs(search(database, "court colour", mode="keyword")) == ["pg-l6:2"]  # OR
        with pytest.raises(NotFoundError, match="autolabel embed"):
            search(database, "months", embedder=HASH)

        assert embed_missing(database, HASH) == 3
        assert embed_missing(database, HASH) == 0
        sem = search(database, "court cases", mode="semantic", embedder=HASH)
        assert sem[0].feature == "pg-l6:2"
        hyb = search(database, "months", embedder=HASH)
        assert {"pg-l6:1", "pg-l9:3"} <= set(refs(hyb)) and hyb[0].mode == "hybrid"
        top = hyb[[h.feature for h in hyb].index("pg-l6:1")]
        assert (top.score, top.floor) == (0.6, 0.1)

        for mode in ("keyword", "semantic", "hybrid"):
            def run(mode: str = mode, **kw: Any) -> list[str]:
                return refs(search(database, "months", mode=mode, embedder=HASH,
                                   filters=SearchFilters(**kw)))
            assert run(sae="pg-l9") == ["pg-l9:3"]
            assert run(layer=6) == ["pg-l6:1"] or mode != "keyword"
            assert run(min_score=0.5) == ["pg-l6:1"]
            assert run(explainer="tokens") == []
            assert set(run(flagged="gender")) <= {"pg-l6:2"}

        # The generated tsvector follows updates; a text change drops the stale embedding.
        with database.session() as s:
            s.execute(update(Explanation).where(Explanation.id == e1)
                      .values(text="violin and piano"))
        assert refs(search(database, "violin", mode="keyword")) == ["pg-l6:1"]
        assert embed_missing(database, HASH) == 1
        assert search(database, "violin piano", mode="semantic", embedder=HASH)[0].feature \
            == "pg-l6:1"
        with database.session() as s:
            s.execute(delete(Explanation).where(Explanation.id == e1))
        assert search(database, "violin", mode="keyword") == []
        assert dbm.schema_drift(database.engine) == []
    finally:
        database.close()
