"""SQLite files: which commands may create one, and where it went.

A mistyped ``--db`` path used to create its directories and a new empty database, so the user's
data silently vanished from view. Reading commands now refuse a missing file; commands that make
databases create it and report where.
"""

from __future__ import annotations

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
