"""Migrations from empty (SQLite and PostgreSQL), drift checks, concurrent migrate-on-open."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from autolabel import db as dbm
from autolabel.db import migrate
from autolabel.errors import DatabaseError
from autolabel.resources import migrations_dir
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


# Revisions that have shipped (0005-0008 as empty placeholders, in the release before this
# one). Databases in the wild sit at them, so editing one changes nothing for those databases
# and leaves them "at head" without the change: add a new revision instead.
LANDED = {
    "0001_initial_schema.py": "0c31cd8036d64cc14a8f5def6d60561778cb5fd4e19493324e27b1529f669d6c",
    "0002_search_index.py": "7404c1895ab490cdc0c34c83e67dc58308851e2d687b5a5e67d13decdc127623",
    "0003_work_queue.py": "3d3b27b9a1abd2a1a32f1e2e343d5aab60217d69138d079bf820b05493fdb7c0",
    "0004_reliability.py": "491548f9457cdad642385da3b78ebaf8b6945775f4b6e68ecab4a3bef02dc8ff",
    "0005_trust.py": "740b450901d9c30596aa1521295ce612083d2a6f6be889220227d4c438bb2526",
    "0006_quality_gate.py": "4c2b414831831dcba9d9e8149ccea050a179f1295ae47d700ff9306cb20d472c",
    "0007_ray.py": "fea7c44dbd14cf79bfc4096b6e84e54030ffc92758f83d01d1ea8c0784de40d4",
    "0008_audit_replication.py": "2e9405c186549177ff5a831104d0b6e4c6a7f0f27f8b7325056b50cb5585ae6a",
}


def test_landed_revisions_are_frozen() -> None:
    versions = migrations_dir() / "versions"
    for name, digest in LANDED.items():
        actual = hashlib.sha256((versions / name).read_bytes()).hexdigest()
        assert actual == digest, f"{name} has shipped: revert it and add a new revision instead"


def test_the_landed_head_shows_drift_until_upgraded(sqlite_url: str) -> None:
    """A database the previous release left at 0008: Alembic's own comparison misses the
    stale CHECK on ``examples.split``; ours reports it, and the upgrade removes all of it."""
    database = dbm.open_database(sqlite_url, migrate=False)
    dbm.upgrade(database.engine, "0008")
    drift = dbm.schema_drift(database.engine)
    assert ("check_differs", "examples", "ck_examples_split", "split IN ('train','test')",
            "split IN ('train','validation','test')") in drift
    assert any(d[0] == "add_column" and d[2] == "scores" for d in drift)
    assert dbm.schema_drift(dbm.open_database(sqlite_url).engine) == []


def test_open_refuses_a_schema_the_upgrade_left_wrong(sqlite_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An upgrade that reaches head without the models' schema (a shipped revision edited
    afterwards) is refused at open, before any stage writes a row into it."""
    real_upgrade = migrate.upgrade

    def stale_upgrade(engine: Engine, revision: str = "head") -> None:
        real_upgrade(engine, "0008")
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE alembic_version SET version_num = '{dbm.head_revision()}'"))

    monkeypatch.setattr(migrate, "upgrade", stale_upgrade)
    with pytest.raises(DatabaseError, match="schema differs from the models.*db check"):
        dbm.open_database(sqlite_url)


def test_the_fast_head_check_agrees_with_alembic(sqlite_url: str) -> None:
    """open_database decides "already at head" without importing alembic; same answer."""
    assert migrate.shipped_head() == migrate.head_revision()
    engine = dbm.make_engine(sqlite_url)
    assert not migrate.at_head(engine)  # empty: no alembic_version table yet
    migrate.upgrade(engine, "0011")
    assert not migrate.at_head(engine)  # one behind
    migrate.upgrade(engine)
    assert migrate.at_head(engine)
    engine.dispose()


def test_the_fast_head_check_defers_to_alembic_when_unsure(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path,
                                                           sqlite_url: str) -> None:
    branchy = tmp_path / "migrations"
    (branchy / "versions").mkdir(parents=True)
    for name, body in {"a.py": 'revision = "a"\ndown_revision = None\n',
                       "b.py": 'revision = "b"\ndown_revision = "a"\n',
                       "c.py": 'revision = "c"\ndown_revision = "a"\n'}.items():
        (branchy / "versions" / name).write_text(body)
    monkeypatch.setattr(migrate, "migrations_dir", lambda: branchy)
    assert migrate.shipped_head() is None  # two heads: alembic has to say
    asked: list[bool] = []
    monkeypatch.setattr(migrate, "current_revision", lambda engine: asked.append(True) or "b")
    monkeypatch.setattr(migrate, "head_revision", lambda: "b")
    assert migrate.at_head(dbm.make_engine(sqlite_url)) and asked
