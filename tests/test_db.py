"""Database: migrations from empty (SQLite and PostgreSQL), drift, constraints, pragmas, blobs."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from autolabel import db as dbm
from autolabel.errors import DatabaseError

TABLES = {
    "runs", "saes", "collections", "features", "examples", "explanations", "scores",
    "llm_calls", "embeddings", "flags", "audits",
}


def _sae(session: object, name: str = "s", content_hash: str = "h" * 64) -> dbm.SAERecord:
    sae = dbm.SAERecord(
        name=name, source=name, hook_name="blocks.6.hook_resid_post", d_in=8, d_sae=16,
        architecture="topk", content_hash=content_hash,
    )
    session.add(sae)  # type: ignore[attr-defined]
    session.flush()  # type: ignore[attr-defined]
    return sae


def test_migrate_from_empty_sqlite(sqlite_url: str) -> None:
    database = dbm.open_database(sqlite_url)
    assert set(inspect(database.engine).get_table_names()) >= TABLES
    assert dbm.current_revision(database.engine) == dbm.head_revision()
    assert dbm.schema_drift(database.engine) == []
    assert dbm.check_database(database)["revision"] == dbm.head_revision()


def test_sqlite_pragmas(sqlite_url: str) -> None:
    database = dbm.open_database(sqlite_url)
    with database.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000


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


def test_unique_feature_identity(sqlite_url: str) -> None:
    database = dbm.open_database(sqlite_url)
    with pytest.raises(IntegrityError), database.session() as s:
        sae = _sae(s)
        s.add_all([dbm.Feature(sae_id=sae.id, index=3), dbm.Feature(sae_id=sae.id, index=3)])
    with database.session() as s:  # the failed transaction left nothing behind
        assert s.query(dbm.SAERecord).count() == 0


def test_explanation_status_checked_and_unique(sqlite_url: str) -> None:
    database = dbm.open_database(sqlite_url)
    with database.session() as s:
        feature = dbm.Feature(sae_id=_sae(s).id, index=0)
        s.add(feature)
        s.flush()
        fid = feature.id
    with pytest.raises(IntegrityError), database.session() as s:
        s.add(dbm.Explanation(feature_id=fid, explainer="llm", text="x", status="great"))
    with pytest.raises(IntegrityError), database.session() as s:
        s.add_all([dbm.Explanation(feature_id=fid, explainer="tokens", text="a", status="ok"),
                   dbm.Explanation(feature_id=fid, explainer="tokens", text="b", status="ok")])


def test_foreign_keys_enforced(sqlite_url: str) -> None:
    database = dbm.open_database(sqlite_url)
    with pytest.raises(IntegrityError), database.session() as s:
        s.add(dbm.Feature(sae_id=999, index=0))


def test_array_blobs_round_trip() -> None:
    acts = np.array([0.0, 1.5, 1e-7, 3e4], dtype=np.float32)
    blob = dbm.pack_array(acts, "float32")
    assert len(blob) == 16
    np.testing.assert_array_equal(dbm.unpack_array(blob, "float32"), acts)
    ids = np.array([2, 262143], dtype=np.int64)
    np.testing.assert_array_equal(dbm.unpack_array(dbm.pack_array(ids, "int32"), "int32"), ids)


def test_normalize_url(tmp_path: Path) -> None:
    assert dbm.normalize_url(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path / 'x.db'}"
    assert dbm.normalize_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert dbm.redact("postgresql+psycopg://u:secret@h/d") == "postgresql+psycopg://u:***@h/d"


def test_bad_urls() -> None:
    with pytest.raises(DatabaseError, match="cannot parse"):
        dbm.open_database("not a url://")
    with pytest.raises(DatabaseError, match="cannot open database"):
        dbm.open_database("postgresql://nobody@127.0.0.1:1/x")


@pytest.mark.postgres
def test_migrate_from_empty_postgres(pg_url: str) -> None:
    database = dbm.open_database(pg_url)
    assert database.dialect == "postgresql"
    assert set(inspect(database.engine).get_table_names()) >= TABLES
    assert dbm.schema_drift(database.engine) == []
    dbm.check_database(database)
    with pytest.raises(IntegrityError), database.session() as s:
        sae = _sae(s)
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
