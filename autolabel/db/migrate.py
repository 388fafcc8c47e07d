"""Migrations: the Alembic scripts shipped inside the package, migrate-on-open and drift checks.

The scripts live in ``alembic/`` (packaged as ``autolabel/migrations``). Opening a database
migrates it to head under a lock, so several workers opening a fresh database at once migrate it
once; ``check_database`` proves the schema is the one the models describe.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from filelock import FileLock
from sqlalchemy import CheckConstraint, inspect, text
from sqlalchemy.engine import Engine

from autolabel.db.engine import (
    Database,
    check_reachable,
    make_engine,
    normalize_url,
    redact,
    sqlite_path,
)
from autolabel.db.models import Base
from autolabel.errors import DatabaseError
from autolabel.resources import migrations_dir

PG_LOCK_KEY = 7_315_202_611  # arbitrary constant: "autolabel migrations" advisory lock

#: Objects the search migration (0002) creates outside the models: the FTS5 table and its
#: shadow tables (SQLite), the generated tsvector column and its GIN index (PostgreSQL).
SEARCH_OBJECT_PREFIX = "search_"


def open_database(url: str | None = None, *, migrate: bool = True) -> Database:
    """Open (and by default migrate to head) the database at ``url``.

    Migration runs under a lock (a file lock beside a SQLite file, an advisory lock on
    PostgreSQL) so that several workers opening a fresh database at once migrate it once.
    """
    full = normalize_url(url)
    engine = make_engine(full)
    check_reachable(engine, full)
    if migrate and not at_head(engine):
        with _migration_lock(engine, full):
            upgrade(engine)
        _refuse_drift(engine, full)
    return Database(url=full, engine=engine)


def _refuse_drift(engine: Engine, url: str) -> None:
    """After an upgrade, prove the schema is the models' before any row is written.

    A revision that changed after it shipped leaves a database "at head" without the columns
    or CHECK values the code writes; that used to surface as an IntegrityError mid-run, after
    the collection's work was done. Checked only when an upgrade ran, so an open stays cheap.
    """
    _raise_on_drift(engine, f"{redact(url)} was migrated to {head_revision()} but its",
                    "restore it from a backup or report it with the output of "
                    "`autolabel db check`")


def _raise_on_drift(engine: Engine, subject: str, fix: str) -> None:
    """One DatabaseError naming the first difference between the models and the schema."""
    drift = schema_drift(engine)
    if drift:
        raise DatabaseError(f"{subject} schema differs from the models ({len(drift)} "
                            f"differences, first: {drift[0]}); {fix}")


def alembic_config(connection: Any = None) -> Any:
    """An Alembic config pointing at the migrations packaged with autolabel."""
    # alembic (~0.5 s import): only when a schema is inspected or migrated
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    """The newest migration shipped with this version of autolabel."""
    from alembic.script import ScriptDirectory  # alembic (~0.5 s import): see alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext  # alembic: see alembic_config

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


_REVISION = re.compile(r"""^revision\b[^=\n]*=\s*["']([^"']+)["']\s*$""", re.M)
_DOWN_REVISION = re.compile(r"""^down_revision\b[^=\n]*=\s*(?:["']([^"']+)["']|None)\s*$""",
                            re.M)


def shipped_head() -> str | None:
    """The head revision read from the text of the shipped scripts (~1 ms, no alembic
    import); None unless every script names one revision and one parent and there is exactly
    one head, in which case the caller asks alembic."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((migrations_dir() / "versions").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        revision, down = _REVISION.findall(text), _DOWN_REVISION.findall(text)
        if len(revision) != 1 or len(down) != 1:
            return None
        revisions.add(revision[0])
        parents.update(p for p in down if p)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def at_head(engine: Engine) -> bool:
    """Whether the database is at the shipped head. Every command opens the database, and
    importing alembic to ask costs ~0.4 s, so the common case (one head, a plain
    ``alembic_version`` row) is read directly; anything else is left to alembic."""
    head = shipped_head()
    if head is not None:
        with engine.connect() as conn:
            if inspect(conn).has_table("alembic_version"):
                rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
                if len(rows) == 1:
                    return bool(rows[0][0] == head)
            else:
                return False  # an empty database: migrate it
    return current_revision(engine) == head_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run migrations up to ``revision`` in one transaction."""
    from alembic import command  # alembic (~0.5 s import): see alembic_config

    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def schema_drift(engine: Engine) -> list[Any]:
    """Differences between the models and the migrated schema (empty list = no drift)."""
    # alembic (~0.5 s import): see alembic_config
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": _include_in_drift}
        )
        return list(compare_metadata(ctx, Base.metadata)) + check_constraint_drift(engine)


def check_constraint_drift(engine: Engine) -> list[Any]:
    """CHECK constraints whose allowed values differ from the models' (Alembic's comparison
    skips CHECKs, and a stale ``split IN ('train','test')`` refuses every validation row).

    Values are compared as the sets of literals in the constraint's text, which SQLite keeps
    as written and PostgreSQL rewrites (``= ANY (ARRAY[...])``) without changing the literals.
    """
    inspector, drift = inspect(engine), []
    tables = set(inspector.get_table_names())
    for table in Base.metadata.sorted_tables:
        if table.name not in tables:
            continue  # compare_metadata already reports the missing table
        stored = {c["name"]: c["sqltext"] for c in inspector.get_check_constraints(table.name)}
        for constraint in table.constraints:
            if not isinstance(constraint, CheckConstraint):
                continue
            name, wanted = str(constraint.name), str(constraint.sqltext)
            have = stored.get(name)
            if have is None or _literals(have) != _literals(wanted):
                drift.append(("check_differs", table.name, name, have, wanted))
    return drift


def _literals(sql: str) -> tuple[frozenset[str], frozenset[str]]:
    """The quoted strings and the bare integers of a CHECK constraint's text."""
    strings = re.findall(r"'([^']*)'", sql)
    numbers = re.findall(r"\b\d+\b", re.sub(r"'[^']*'", "", sql))
    return frozenset(strings), frozenset(numbers)


def _include_in_drift(name: str | None, type_: str, parent_names: Any) -> bool:
    """Drift check filter: skip the search-index objects, compare everything else."""
    return not (name or "").startswith(SEARCH_OBJECT_PREFIX)


@contextlib.contextmanager
def _migration_lock(engine: Engine, url: str) -> Iterator[None]:
    """Serialise migrations across processes: file lock (SQLite) or advisory lock (PostgreSQL)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
        return
    path = sqlite_path(url)
    if path is None:
        yield
        return
    with FileLock(str(path) + ".migrate.lock", timeout=600):
        yield


def check_database(database: Database) -> dict[str, Any]:
    """Verify the schema is current and matches the models; raise a DatabaseError otherwise."""
    rev, head = current_revision(database.engine), head_revision()
    url = redact(database.url)
    if rev != head:
        raise DatabaseError(
            f"{url} is at revision {rev or '(empty)'} but this autolabel needs {head}; "
            "run `autolabel db upgrade`"
        )
    _raise_on_drift(database.engine, url, "it was changed by hand or by another version — "
                    "restore or re-create it")
    return {"url": url, "revision": rev, "head": head, "drift": []}
