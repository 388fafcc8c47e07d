"""The data model: one SQLAlchemy 2 ORM class per table, under a stable naming convention.

Natural identities carry unique constraints so that a re-run or a crashed-and-resumed batch can
never insert a duplicate; bulk arrays are compact blobs (see :mod:`autolabel.db.arrays`). The
migrations in ``alembic/`` create exactly these tables (``check_database`` verifies it).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

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
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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
        CheckConstraint("status IN ('running','ok','failed','partial','killed')", name="status"),
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
    split: Mapped[str] = mapped_column(String(16))  # train | validation | test (0011)
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
        CheckConstraint("split IN ('train','validation','test')", name="split"),
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
    # Issue 13 (migration 0010): the quality gate's reason code for a ``rejected`` candidate,
    # and the gate version that judged it (NULL: judged before the gate; re-checked).
    reason: Mapped[str | None] = mapped_column(String(32))
    gate_version: Mapped[int | None] = mapped_column(Integer)
    __table_args__ = (
        UniqueConstraint(
            "feature_id", "explainer", "llm_model", "prompt_hash", "candidate",
            name="uq_explanations_identity",
        ),
        CheckConstraint("status IN ('ok','parse_error','refused','error','rejected')",
                        name="status"),
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
    simulator: Mapped[str] = mapped_column(Text, default="")
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
    # Issue 13 (migration 0009): ``value`` is the test-split score (the one reported);
    # ``validation_value`` the one best-of-k chooses by; null summary, bootstrap CI, verdict.
    validation_value: Mapped[float | None] = mapped_column(Float)
    null_mean: Mapped[float | None] = mapped_column(Float)
    null_p95: Mapped[float | None] = mapped_column(Float)
    null_n: Mapped[int | None] = mapped_column(Integer)
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    verdict: Mapped[str | None] = mapped_column(String(16))
    __table_args__ = (
        UniqueConstraint("explanation_id", "scorer", "simulator", name="uq_scores_identity"),
        Index("ix_scores_scorer_value", "scorer", "value"),
        CheckConstraint("verdict IS NULL OR verdict IN ('trusted','weak','at_floor',"
                        "'unscored')", name="verdict"),
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
    # Migration 0012: "AUD-<database hash>-<id>", unique across databases (NULL before 0012).
    document_id: Mapped[str | None] = mapped_column(String(40))
    __table_args__ = (Index("ix_audits_sae", "sae_id", "created_at"),)


class Flag(Base):
    """A bias flag on a feature: category, evidence tier, statistics and the evidence itself."""

    __tablename__ = "flags"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"))
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id", ondelete="CASCADE"))
    category: Mapped[str] = mapped_column(Text)
    tier: Mapped[int] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(16), default="review")
    effect_size: Mapped[float | None] = mapped_column(Float)
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float)
    q_value: Mapped[float | None] = mapped_column(Float)
    direction: Mapped[str | None] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (
        UniqueConstraint("audit_id", "feature_id", "category", "tier", name="uq_flags_identity"),
        CheckConstraint("tier IN (1, 2, 3)", name="tier"),
        Index("ix_flags_category", "category", "tier"),
    )
