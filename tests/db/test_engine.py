"""Engines and URLs: SQLite pragmas, URL normalisation and redaction, bad URLs fail in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from autolabel import db as dbm
from autolabel.errors import DatabaseError


def test_sqlite_pragmas(sqlite_url: str) -> None:
    database = dbm.open_database(sqlite_url)
    with database.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000


def test_normalize_url(tmp_path: Path) -> None:
    assert dbm.normalize_url(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path / 'x.db'}"
    assert dbm.normalize_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert dbm.redact("postgresql+psycopg://u:secret@h/d") == "postgresql+psycopg://u:***@h/d"


def test_bad_urls() -> None:
    with pytest.raises(DatabaseError, match="cannot parse"):
        dbm.open_database("not a url://")
    with pytest.raises(DatabaseError, match="cannot open database"):
        dbm.open_database("postgresql://nobody@127.0.0.1:1/x")
