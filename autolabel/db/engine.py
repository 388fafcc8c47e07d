"""Database URLs, engines and the open-database handle.

SQLite is the embedded default (WAL, foreign keys, busy timeout); PostgreSQL serves teams with
the same models and migrations. Every failure to parse, reach or create a database becomes a
one-line :class:`~autolabel.errors.DatabaseError` that says which flag or variable to fix.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError
from sqlalchemy.exc import DatabaseError as SQLAlchemyDatabaseError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from autolabel.errors import DatabaseError

# ---------------------------------------------------------------------------------------------
# URLs


def default_db_path() -> Path:
    """The SQLite file used when neither --db, AUTOLABEL_DB nor the config names one."""
    return Path(platformdirs.user_data_dir("autolabel", appauthor=False)) / "autolabel.db"


def env_db_url() -> str | None:
    """The database URL from the environment, if set."""
    return os.environ.get("AUTOLABEL_DB") or None


def normalize_url(url: str | None) -> str:
    """Accept a SQLAlchemy URL or a plain file path; pick the psycopg 3 driver for PostgreSQL."""
    if not url:
        url = str(default_db_path())
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def redact(url: str) -> str:
    """A URL safe to print or store: the password is hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for in-memory databases and other backends."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database)


# ---------------------------------------------------------------------------------------------
# Engines


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    """Per-connection SQLite settings: WAL, foreign keys, patience with concurrent writers."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str) -> Engine:
    """Create an engine with the right per-dialect settings; bad URLs become DatabaseError."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(
            f"cannot parse database URL {url!r}; use a file path or e.g. postgresql://user@host/db"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        return _make_sqlite_engine(url)
    try:
        return create_engine(url, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise DatabaseError(
            f"no driver for {parsed.get_backend_name()} ({exc.name} missing); "
            "install it with: pip install 'autolabel[postgres]'"
        ) from None


def _make_sqlite_engine(url: str) -> Engine:
    """SQLite engine; file-backed databases get their directory created first."""
    path = sqlite_path(url)
    if path is None:
        engine = create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(
                f"cannot create {path.parent} for the database ({exc.strerror}); pass --db PATH"
            ) from None
        engine = create_engine(url, connect_args={"timeout": 30})
    event.listen(engine, "connect", _on_sqlite_connect)
    return engine


def check_reachable(engine: Engine, url: str) -> None:
    """Fail early, in one line, when the server is down or the file is unusable."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyDatabaseError as exc:  # OperationalError, "file is not a database", …
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseError(
            f"cannot open database {redact(url)}: {reason}; check --db / AUTOLABEL_DB"
        ) from None


# ---------------------------------------------------------------------------------------------
# The database handle


@dataclass
class Database:
    """An open, migrated database: engine + session factory (see ``open_database``)."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session] = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: commits on success, rolls back on any error (no partial rows)."""
        with self.sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()
