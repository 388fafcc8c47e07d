"""Database: SQLAlchemy 2 models for the whole data model, engine set-up, migrate-on-open.

SQLite is the embedded default (WAL, foreign keys, busy timeout); PostgreSQL serves teams with
the same models and migrations. Natural identities carry unique constraints so that a re-run or a
crashed-and-resumed batch can never insert a duplicate; bulk arrays are compact blobs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    make_url,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

from autolabel.errors import DatabaseError

# Stable constraint names, so migrations mean the same thing on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Timezone-aware now, so stored times compare correctly across machines."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base with the naming convention above."""

    metadata = MetaData(naming_convention=NAMING)


class Run(Base):
    """One CLI invocation or nightly batch, with its config for provenance."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    command: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    package_version: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    argv: Mapped[list[str]] = mapped_column(JSON, default=list)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (
        CheckConstraint("status IN ('running','ok','failed','partial')", name="status"),
        Index("ix_runs_status_started", "status", "started_at"),
    )


class SAERecord(Base):
    """An SAE, identified by the hash of its weights (the same SAE loaded twice is one row)."""

    __tablename__ = "saes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    source: Mapped[str] = mapped_column(Text)
    release: Mapped[str | None] = mapped_column(String(255))
    sae_id: Mapped[str | None] = mapped_column(String(255))
    path: Mapped[str | None] = mapped_column(Text)
    model_id: Mapped[str | None] = mapped_column(String(255))
    hook_name: Mapped[str] = mapped_column(String(255))
    layer: Mapped[int | None] = mapped_column(Integer)
    d_in: Mapped[int] = mapped_column(Integer)
    d_sae: Mapped[int] = mapped_column(Integer)
    architecture: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))


class Collection(Base):
    """One collection pass, keyed by everything that determines its examples."""

    __tablename__ = "collections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64), unique=True)
    model_id: Mapped[str] = mapped_column(String(255))
    model_revision: Mapped[str | None] = mapped_column(String(255))
    layer: Mapped[int] = mapped_column(Integer)
    corpus: Mapped[str] = mapped_column(Text)
    corpus_fingerprint: Mapped[str | None] = mapped_column(String(128))
    window: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    n_tokens: Mapped[int] = mapped_column(Integer, default=0)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="running")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    __table_args__ = (CheckConstraint("status IN ('running','ok','failed')", name="status"),)


class Feature(Base):
    """An SAE latent and its activation statistics from the latest collection."""

    __tablename__ = "features"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    collection_id: Mapped[int | None] = mapped_column(
        ForeignKey("collections.id", ondelete="SET NULL")
    )
    n_tokens: Mapped[int] = mapped_column(Integer, default=0)
    n_firing: Mapped[int] = mapped_column(Integer, default=0)
    density: Mapped[float] = mapped_column(Float, default=0.0)
    max_activation: Mapped[float] = mapped_column(Float, default=0.0)
    mean_activation: Mapped[float] = mapped_column(Float, default=0.0)
    mean_firing_activation: Mapped[float] = mapped_column(Float, default=0.0)
    histogram: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (
        UniqueConstraint("sae_id", "index", name="uq_features_sae_index"),
        Index("ix_features_density", "sae_id", "density"),
    )


class Example(Base):
    """A context window of a feature; token ids and activations as compact arrays."""

    __tablename__ = "examples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id", ondelete="CASCADE"))
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    split: Mapped[str] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(16))
    bin: Mapped[int | None] = mapped_column(Integer)
    rank: Mapped[int] = mapped_column(Integer)
    document_id: Mapped[str] = mapped_column(String(512))
    start: Mapped[int] = mapped_column(Integer)
    token_ids: Mapped[bytes] = mapped_column(LargeBinary)
    activations: Mapped[bytes] = mapped_column(LargeBinary)
    max_activation: Mapped[float] = mapped_column(Float)
    __table_args__ = (
        UniqueConstraint(
            "feature_id", "collection_id", "split", "kind", "rank", name="uq_examples_identity"
        ),
        CheckConstraint("split IN ('train','test')", name="split"),
        CheckConstraint("kind IN ('top','quantile','random')", name="kind"),
        Index("ix_examples_feature_split_kind", "feature_id", "split", "kind"),
    )


class LLMCall(Base):
    """Every LLM request and reply; also the cache (looked up by ``request_hash``)."""

    __tablename__ = "llm_calls"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64), index=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prompt: Mapped[str] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text)
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))


class Explanation(Base):
    """A candidate explanation; failures are statuses with the raw reply, never fake text."""

    __tablename__ = "explanations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id", ondelete="CASCADE"))
    explainer: Mapped[str] = mapped_column(String(32))
    llm_model: Mapped[str] = mapped_column(String(255), default="")
    prompt_hash: Mapped[str] = mapped_column(String(64), default="")
    candidate: Mapped[int] = mapped_column(Integer, default=0)
    text: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    raw_reply: Mapped[str | None] = mapped_column(Text)
    llm_call_id: Mapped[int | None] = mapped_column(
        ForeignKey("llm_calls.id", ondelete="SET NULL")
    )
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    is_best: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    __table_args__ = (
        UniqueConstraint(
            "feature_id", "explainer", "llm_model", "prompt_hash", "candidate",
            name="uq_explanations_identity",
        ),
        CheckConstraint("status IN ('ok','parse_error','refused','error')", name="status"),
        Index("ix_explanations_feature", "feature_id", "status"),
    )


class Score(Base):
    """A scorer's value for an explanation, stored beside its floor (a wrong explanation)."""

    __tablename__ = "scores"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    explanation_id: Mapped[int] = mapped_column(
        ForeignKey("explanations.id", ondelete="CASCADE")
    )
    scorer: Mapped[str] = mapped_column(String(32))
    simulator: Mapped[str] = mapped_column(String(64), default="")
    value: Mapped[float | None] = mapped_column(Float)
    floor_value: Mapped[float | None] = mapped_column(Float)
    floor_explanation_id: Mapped[int | None] = mapped_column(
        ForeignKey("explanations.id", ondelete="SET NULL")
    )
    n_examples: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    __table_args__ = (
        UniqueConstraint("explanation_id", "scorer", "simulator", name="uq_scores_identity"),
        Index("ix_scores_scorer_value", "scorer", "value"),
    )


class Embedding(Base):
    """An explanation's embedding vector (float32 blob) under a named model."""

    __tablename__ = "embeddings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    explanation_id: Mapped[int] = mapped_column(
        ForeignKey("explanations.id", ondelete="CASCADE")
    )
    model: Mapped[str] = mapped_column(String(255))
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (
        UniqueConstraint("explanation_id", "model", name="uq_embeddings_identity"),
        Index("ix_embeddings_model", "model"),
    )


class Audit(Base):
    """One bias audit (its report's run), with the config hash that produced it."""

    __tablename__ = "audits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"))
    config_hash: Mapped[str] = mapped_column(String(64))
    pairs: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="running")
    report_path: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (Index("ix_audits_sae", "sae_id", "created_at"),)


class Flag(Base):
    """A bias flag on a feature: category, evidence tier, statistics and the evidence itself."""

    __tablename__ = "flags"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"))
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id", ondelete="CASCADE"))
    category: Mapped[str] = mapped_column(String(64))
    tier: Mapped[int] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(16), default="review")
    effect_size: Mapped[float | None] = mapped_column(Float)
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float)
    q_value: Mapped[float | None] = mapped_column(Float)
    direction: Mapped[str | None] = mapped_column(String(32))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (
        UniqueConstraint("audit_id", "feature_id", "category", "tier", name="uq_flags_identity"),
        CheckConstraint("tier IN (1, 2, 3)", name="tier"),
        Index("ix_flags_category", "category", "tier"),
    )


class WorkItem(Base):
    """A batch of features for ``autolabel run --worker`` (PostgreSQL work queue).

    Workers claim rows with ``FOR UPDATE SKIP LOCKED`` and refresh ``heartbeat_at`` while they
    work; a claimed row whose heartbeat is older than the stale timeout belongs to a dead worker
    and is claimed again. ``key`` names the work (collection + explain/score settings), so the
    same config planned twice reuses its rows and a changed config gets new ones.
    """

    __tablename__ = "work_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sae_id: Mapped[int] = mapped_column(ForeignKey("saes.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    feature_lo: Mapped[int] = mapped_column(Integer)
    feature_hi: Mapped[int] = mapped_column(Integer)
    features: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    worker: Mapped[str | None] = mapped_column(String(255))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    __table_args__ = (
        UniqueConstraint("sae_id", "key", "feature_lo", name="uq_work_items_identity"),
        CheckConstraint("status IN ('pending','claimed','done','failed')", name="status"),
        Index("ix_work_items_key_status", "key", "status", "feature_lo"),
    )


# ---------------------------------------------------------------------------------------------
# Arrays as blobs


def pack_array(values: np.ndarray, dtype: str) -> bytes:
    """Store an array as little-endian raw bytes of a fixed dtype (compact, no pickle)."""
    return np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def unpack_array(blob: bytes, dtype: str) -> np.ndarray:
    """Inverse of :func:`pack_array` (returns a writable native-endian copy)."""
    return np.frombuffer(blob, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)


# ---------------------------------------------------------------------------------------------
# URLs and engines


def default_db_path() -> Path:
    """The SQLite file used when neither --db, AUTOLABEL_DB nor the config names one."""
    import platformdirs

    return Path(platformdirs.user_data_dir("autolabel", appauthor=False)) / "autolabel.db"


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
    """The file behind a SQLite URL, or None for in-memory databases."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database)


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


# ---------------------------------------------------------------------------------------------
# The database handle


@dataclass
class Database:
    """An open, migrated database: engine + session factory."""

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


def open_database(url: str | None = None, *, migrate: bool = True) -> Database:
    """Open (and by default migrate to head) the database at ``url``.

    Migration runs under a lock (a file lock beside a SQLite file, an advisory lock on
    PostgreSQL) so that several workers opening a fresh database at once migrate it once.
    """
    full = normalize_url(url)
    engine = make_engine(full)
    _check_reachable(engine, full)
    if migrate and current_revision(engine) != head_revision():
        with _migration_lock(engine, full):
            upgrade(engine)
    return Database(url=full, engine=engine)


def _check_reachable(engine: Engine, url: str) -> None:
    """Fail early, in one line, when the server is down or the file is unusable."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseError(
            f"cannot open database {redact(url)}: {reason}; check --db / AUTOLABEL_DB"
        ) from None


def env_db_url() -> str | None:
    """The database URL from the environment, if set."""
    return os.environ.get("AUTOLABEL_DB") or None


# ---------------------------------------------------------------------------------------------
# Migrations (Alembic scripts shipped inside the package as autolabel/migrations)

PG_LOCK_KEY = 7_315_202_611  # arbitrary constant: "autolabel migrations" advisory lock


def alembic_config(connection: Any = None) -> Any:
    """An Alembic config pointing at the migrations packaged with autolabel."""
    from alembic.config import Config as AlembicConfig

    from autolabel.resources import migrations_dir

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    """The newest migration shipped with this version of autolabel."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run migrations up to ``revision`` in one transaction."""
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def schema_drift(engine: Engine) -> list[Any]:
    """Differences between the models and the migrated schema (empty list = no drift)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": _include_in_drift}
        )
        return list(compare_metadata(ctx, Base.metadata))


#: Objects the search migration (0002) creates outside the models: the FTS5 table and its
#: shadow tables (SQLite), the generated tsvector column and its GIN index (PostgreSQL).
SEARCH_OBJECT_PREFIX = "search_"


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
    from filelock import FileLock

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
    drift = schema_drift(database.engine)
    if drift:
        raise DatabaseError(
            f"{url} schema differs from the models ({len(drift)} differences, first: "
            f"{drift[0]}); it was changed by hand or by another version — restore or re-create it"
        )
    return {"url": url, "revision": rev, "head": head, "drift": []}
