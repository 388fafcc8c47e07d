"""SQLite files: which commands may create one, and where it went.

A mistyped ``--db`` path used to create its directories and a new empty database, so the user's
data silently vanished from view. Reading commands now refuse a missing file; commands that make
databases create it and report where.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from autolabel.db.engine import normalize_url, sqlite_path
from autolabel.errors import DatabaseError


def prepare_sqlite_file(url: str | None, *, create: bool) -> Path | None:
    """Check (or prepare) the SQLite file behind ``url``; returns the path when it is new.

    PostgreSQL URLs and in-memory databases pass through untouched (None).
    """
    path = sqlite_path(normalize_url(url))
    if path is None or path.exists():
        return None
    if not create:
        raise DatabaseError(
            f"no database at {path}; check --db / AUTOLABEL_DB, or create one with "
            "`autolabel run`, `autolabel collect` or `autolabel db upgrade`")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


RESULT_TABLES = ("saes", "collections", "features", "explanations", "runs")


def discard_if_empty(path: Path) -> bool:
    """Delete a SQLite file this command created when it holds no results (the command failed
    before writing any), so a bad input leaves nothing behind; True when it was deleted."""
    if not path.exists():
        return False
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in RESULT_TABLES:
            if table in names and conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():
                return False
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return True
