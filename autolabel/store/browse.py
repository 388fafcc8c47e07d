"""Reads for browsing (``autolabel serve``): one feature with everything shown about it, an
SAE's overview, audits and their flags. Read-only by construction: nothing here writes.

Rows come back as plain dataclasses and dicts, detached from the session, so templates and the
JSON API never trigger lazy loads. Token ids stay ids: decoding is the caller's (it needs the
subject model's tokenizer, loaded once per server).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from autolabel.db import (
    Audit,
    Collection,
    Embedding,
    Explanation,
    Feature,
    Flag,
    SAERecord,
    Score,
)
from autolabel.examples import Example
from autolabel.store.features import feature_model_id, get_feature, load_examples
from autolabel.store.labels import Label, feature_labels
from autolabel.store.saes import find_sae

LABEL_CAP = 20_000  # features whose labels an overview computes (the rest are counted only)


@dataclass
class ScoreView:
    """One score row of an explanation, as a reader sees it."""

    scorer: str
    simulator: str
    value: float | None
    floor: float | None
    validation: float | None
    null_p95: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: str | None
    status: str
    n: int


@dataclass
class ExplanationView:
    """One candidate explanation with its status, provenance and scores."""

    id: int
    explainer: str
    llm_model: str
    candidate: int
    status: str
    text: str | None
    error: str | None
    is_best: bool
    scores: list[ScoreView] = field(default_factory=list)


@dataclass
class FlagView:
    """A bias flag that concerns a feature (or is listed in an audit)."""

    audit_id: int
    feature_id: int
    feature_index: int
    category: str
    tier: int
    severity: str
    effect_size: float | None
    ci_low: float | None
    ci_high: float | None
    q_value: float | None
    direction: str | None
    evidence: dict[str, Any]


@dataclass
class FeatureView:
    """Everything the feature page and ``/api/feature`` show about one feature."""

    sae: SAERecord
    feature: Feature
    model_id: str | None
    examples: list[Example]
    explanations: list[ExplanationView]
    label: Label
    flags: list[FlagView]
    label_vector: bytes | None  # the label's stored vector under the searched model


def _score_view(s: Score) -> ScoreView:
    return ScoreView(scorer=s.scorer, simulator=s.simulator, value=s.value,
                     floor=s.floor_value, validation=s.validation_value, null_p95=s.null_p95,
                     ci_low=s.ci_low, ci_high=s.ci_high, verdict=s.verdict, status=s.status,
                     n=s.n_examples)


def explanation_views(session: Session, feature_id: int) -> list[ExplanationView]:
    """Every candidate of a feature (failed ones too: a reader may want to see why)."""
    rows = session.scalars(select(Explanation).where(Explanation.feature_id == feature_id)
                           .order_by(Explanation.id)).all()
    scores: dict[int, list[ScoreView]] = {}
    if rows:
        for s in session.scalars(select(Score).where(
                Score.explanation_id.in_([r.id for r in rows])).order_by(Score.id)):
            scores.setdefault(s.explanation_id, []).append(_score_view(s))
    return [ExplanationView(id=r.id, explainer=r.explainer, llm_model=r.llm_model,
                            candidate=r.candidate, status=r.status, text=r.text, error=r.error,
                            is_best=bool(r.is_best), scores=scores.get(r.id, []))
            for r in rows]


def _flag_view(flag: Flag, index: int) -> FlagView:
    return FlagView(audit_id=flag.audit_id, feature_id=flag.feature_id, feature_index=index,
                    category=flag.category, tier=flag.tier, severity=flag.severity,
                    effect_size=flag.effect_size, ci_low=flag.ci_low, ci_high=flag.ci_high,
                    q_value=flag.q_value, direction=flag.direction,
                    evidence=dict(flag.evidence or {}))


def feature_flags(session: Session, feature_id: int) -> list[FlagView]:
    """The flags of the newest finished audit that flagged this feature at all."""
    rows = session.execute(
        select(Flag, Feature.index).join(Feature, Feature.id == Flag.feature_id)
        .where(Flag.feature_id == feature_id).order_by(Flag.audit_id.desc(), Flag.tier)
    ).all()
    if not rows:
        return []
    newest = rows[0][0].audit_id
    return [_flag_view(f, int(i)) for f, i in rows if f.audit_id == newest]


def feature_view(session: Session, ref: str, scorer: str = "simulation",
                 vector_model: str | None = None) -> FeatureView:
    """Load one feature (``SAE:INDEX``) for its page; NotFoundError names what to run."""
    sae, feature = get_feature(session, ref)
    label = feature_labels(session, [feature.id], scorer)[feature.id]
    vector = None
    if vector_model and label.explanation_id is not None:
        vector = session.scalar(select(Embedding.vector).where(
            Embedding.explanation_id == label.explanation_id, Embedding.model == vector_model))
    return FeatureView(sae=sae, feature=feature, model_id=feature_model_id(session, feature),
                       examples=load_examples(session, feature.id),
                       explanations=explanation_views(session, feature.id), label=label,
                       flags=feature_flags(session, feature.id),
                       label_vector=bytes(vector) if vector is not None else None)


# ---------------------------------------------------------------------------------------------
# SAEs


def sae_list(session: Session) -> list[tuple[SAERecord, int]]:
    """Every SAE with its number of collected features, by name."""
    counts = dict(session.execute(select(Feature.sae_id, func.count()).group_by(Feature.sae_id))
                  .tuples().all())
    return [(s, int(counts.get(s.id, 0)))
            for s in session.scalars(select(SAERecord).order_by(SAERecord.name))]


@dataclass
class SAEOverview:
    """An SAE's features with their labels (up to :data:`LABEL_CAP`), for its overview."""

    sae: SAERecord
    total: int
    features: list[Feature]
    labels: dict[int, Label]
    statuses: dict[str, int]  # explanation status -> count


def sae_overview(session: Session, name: str | None, scorer: str = "simulation") -> SAEOverview:
    """Features (by index, capped) and their labels; explanation counts by status."""
    sae = find_sae(session, name)
    total = int(session.scalar(select(func.count()).where(Feature.sae_id == sae.id)) or 0)
    features = list(session.scalars(select(Feature).where(Feature.sae_id == sae.id)
                                    .order_by(Feature.index).limit(LABEL_CAP)))
    labels: dict[int, Label] = {}
    ids = [f.id for f in features]
    for start in range(0, len(ids), 2000):
        labels.update(feature_labels(session, ids[start:start + 2000], scorer))
    statuses = dict(session.execute(
        select(Explanation.status, func.count()).join(Feature, Feature.id == Explanation.feature_id)
        .where(Feature.sae_id == sae.id).group_by(Explanation.status)).tuples().all())
    return SAEOverview(sae=sae, total=total, features=features, labels=labels,
                       statuses={k: int(v) for k, v in statuses.items()})


def collection_models(session: Session) -> list[str]:
    """The subject models features were collected with (whose tokenizers pages need)."""
    return sorted({str(m) for m in session.scalars(select(Collection.model_id).distinct())
                   if m})


def features_by_index(session: Session, sae_id: int,
                      indices: Sequence[int]) -> dict[int, Feature]:
    """The collected features among ``indices`` of one SAE, by index."""
    if not indices:
        return {}
    rows = session.scalars(select(Feature).where(Feature.sae_id == sae_id,
                                                 Feature.index.in_([int(i) for i in indices])))
    return {int(f.index): f for f in rows}


def features_by_id(session: Session, feature_ids: Sequence[int]) -> dict[int, tuple[str, int]]:
    """Feature id -> (SAE name, index)."""
    if not feature_ids:
        return {}
    rows = session.execute(select(Feature.id, SAERecord.name, Feature.index)
                           .join(SAERecord, SAERecord.id == Feature.sae_id)
                           .where(Feature.id.in_(list(feature_ids)))).all()
    return {int(i): (str(n), int(x)) for i, n, x in rows}


# ---------------------------------------------------------------------------------------------
# Audits


@dataclass
class AuditView:
    """An audit with its SAE name and flag count (its flags when loaded one by one)."""

    audit: Audit
    sae: str
    n_flags: int
    flags: list[FlagView] = field(default_factory=list)


def audit_list(session: Session) -> list[AuditView]:
    """Every audit, newest first."""
    counts = dict(session.execute(select(Flag.audit_id, func.count()).group_by(Flag.audit_id))
                  .tuples().all())
    rows = session.execute(select(Audit, SAERecord.name)
                           .join(SAERecord, SAERecord.id == Audit.sae_id)
                           .order_by(Audit.id.desc())).all()
    return [AuditView(audit=a, sae=str(n), n_flags=int(counts.get(a.id, 0))) for a, n in rows]


def audit_view(session: Session, audit_id: int) -> AuditView | None:
    """One audit with its flags (by tier, then category and feature), or None."""
    row = session.execute(select(Audit, SAERecord.name)
                          .join(SAERecord, SAERecord.id == Audit.sae_id)
                          .where(Audit.id == audit_id)).first()
    if row is None:
        return None
    flags = session.execute(
        select(Flag, Feature.index).join(Feature, Feature.id == Flag.feature_id)
        .where(Flag.audit_id == audit_id).order_by(Flag.tier, Flag.category, Feature.index)
    ).all()
    views = [_flag_view(f, int(i)) for f, i in flags]
    return AuditView(audit=row[0], sae=str(row[1]), n_flags=len(views), flags=views)
