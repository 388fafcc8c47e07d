"""Database: SQLAlchemy 2 models for the whole data model, engine set-up, migrate-on-open.

SQLite is the embedded default (WAL, foreign keys, busy timeout); PostgreSQL serves teams with
the same models and migrations. Natural identities carry unique constraints so that a re-run or a
crashed-and-resumed batch can never insert a duplicate; bulk arrays are compact blobs.

Modules: :mod:`~autolabel.db.models` (ORM classes), :mod:`~autolabel.db.arrays` (blobs),
:mod:`~autolabel.db.engine` (URLs, engines, ``Database``), :mod:`~autolabel.db.migrate`
(Alembic, ``open_database``, ``check_database``). Every public name is re-exported here, so
``from autolabel.db import Feature, open_database`` keeps working.
"""

from __future__ import annotations

from autolabel.db.arrays import pack_array, unpack_array
from autolabel.db.engine import (
    Database,
    check_reachable,
    default_db_path,
    env_db_url,
    make_engine,
    normalize_url,
    redact,
    sqlite_path,
)
from autolabel.db.migrate import (
    PG_LOCK_KEY,
    SEARCH_OBJECT_PREFIX,
    alembic_config,
    check_database,
    current_revision,
    head_revision,
    open_database,
    schema_drift,
    upgrade,
)
from autolabel.db.models import (
    NAMING,
    Audit,
    Base,
    Collection,
    Embedding,
    Example,
    Explanation,
    Feature,
    Flag,
    LLMCall,
    Run,
    SAERecord,
    Score,
    utcnow,
)

__all__ = [
    "NAMING",
    "PG_LOCK_KEY",
    "SEARCH_OBJECT_PREFIX",
    "Audit",
    "Base",
    "Collection",
    "Database",
    "Embedding",
    "Example",
    "Explanation",
    "Feature",
    "Flag",
    "LLMCall",
    "Run",
    "SAERecord",
    "Score",
    "alembic_config",
    "check_database",
    "check_reachable",
    "current_revision",
    "default_db_path",
    "env_db_url",
    "head_revision",
    "make_engine",
    "normalize_url",
    "open_database",
    "pack_array",
    "redact",
    "schema_drift",
    "sqlite_path",
    "unpack_array",
    "upgrade",
    "utcnow",
]
