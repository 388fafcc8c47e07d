"""Migrations from empty (SQLite and PostgreSQL), drift checks, concurrent migrate-on-open."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from autolabel import db as dbm
from autolabel.errors import DatabaseError
from tests.db.rows import sae_row

TABLES = {
    "runs", "saes", "collections", "features", "examples", "explanations", "scores",
    "llm_calls", "embeddings", "flags", "audits",
}


def test_migrate_from_empty_sqlite(sqlite_url: str) -> None:
    database = dbm.open_database(sqlite_url)
    assert set(inspect(database.engine).get_table_names()) >= TABLES
    assert dbm.current_revision(database.engine) == dbm.head_revision()
    assert dbm.schema_drift(database.engine) == []
    assert dbm.check_database(database)["revision"] == dbm.head_revision()


def test_check_fails_on_empty_db(sqlite_url: str) -> None:
    database = dbm.open_database(sqlite_url, migrate=False)
    with pytest.raises(DatabaseError, match="autolabel db upgrade"):
        dbm.check_database(database)


def test_check_detects_drift(sqlite_url: str) -> None:
    database = dbm.open_database(sqlite_url)
    with database.engine.begin() as conn:
        conn.execute(text("ALTER TABLE runs ADD COLUMN rogue INTEGER"))
    with pytest.raises(DatabaseError, match="differs from the models"):
        dbm.check_database(database)


def test_concurrent_open_migrates_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            dbm.open_database(url)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert dbm.current_revision(dbm.open_database(url).engine) == dbm.head_revision()


@pytest.mark.postgres
def test_migrate_from_empty_postgres(pg_url: str) -> None:
    database = dbm.open_database(pg_url)
    assert database.dialect == "postgresql"
    assert set(inspect(database.engine).get_table_names()) >= TABLES
    assert dbm.schema_drift(database.engine) == []
    dbm.check_database(database)
    with pytest.raises(IntegrityError), database.session() as s:
        sae = sae_row(s)
        s.add_all([dbm.Feature(sae_id=sae.id, index=1), dbm.Feature(sae_id=sae.id, index=1)])


@pytest.mark.postgres
def test_postgres_concurrent_open(pg_url: str) -> None:
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            dbm.open_database(pg_url).close()
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
