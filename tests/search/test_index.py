"""The keyword index of migration 0002: schema, backfill, and triggers that follow every write."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, text, update

from autolabel import db as dbm
from autolabel.db import Database, Explanation, Feature, SAERecord
from autolabel.search import SearchFilters, search
from tests.search.helpers import (
    add_explanation,
    add_feature,
    add_legacy_explanation,
    add_sae,
    fts_rows,
    refs,
)


def test_drift_clean_after_search_migration(database: Database) -> None:
    assert dbm.current_revision(database.engine) == dbm.head_revision()
    assert dbm.schema_drift(database.engine) == []
    assert dbm.check_database(database)["drift"] == []


def test_migration_backfills_existing_rows(sqlite_url: str) -> None:
    database = dbm.open_database(sqlite_url, migrate=False)
    dbm.upgrade(database.engine, "0001")
    sae = add_sae(database, "old", 3)
    feature = add_feature(database, sae, 5)
    ok = add_legacy_explanation(database, feature, "legacy citations of statutes")
    add_legacy_explanation(database, feature, "refused text", status="refused", candidate=1)
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
