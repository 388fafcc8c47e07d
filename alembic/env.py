"""Alembic environment for autolabel.

Migrations run on a connection handed in by ``autolabel.db.migrate`` (``config.attributes``), so the
same scripts serve migrate-on-open, ``autolabel db upgrade`` and tests, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os

from sqlalchemy import create_engine

from alembic import context
from autolabel.db.engine import normalize_url
from autolabel.db.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Migrate using the caller's connection (or AUTOLABEL_DB when run by the alembic CLI)."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        engine = create_engine(normalize_url(os.environ.get("AUTOLABEL_DB")))
        with engine.begin() as conn:
            _configure_and_run(conn)
        return
    _configure_and_run(connection)


def _configure_and_run(connection: object) -> None:
    """SQLite needs batch mode to alter tables; compare types so drift checks are strict."""
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
