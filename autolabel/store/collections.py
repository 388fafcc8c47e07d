"""Collections (one streaming pass of a model + SAE over a corpus) and their feature results.

Stages compute in memory and hand their results here; every write is one transaction, so a
killed process leaves either the whole result of a step or nothing (never partial rows).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from autolabel.db import Collection, Feature, pack_array, utcnow
from autolabel.db import Example as ExampleRow
from autolabel.errors import NotFoundError
from autolabel.examples import Example
from autolabel.hashing import content_hash
from autolabel.selection import parse_feature_range

TOKEN_DTYPE = "int32"
ACT_DTYPE = "float32"


class FeatureResultLike(Protocol):
    """One feature's statistics and examples (``collect.FeatureResult`` fits)."""

    feature: int
    n_tokens: int
    n_firing: int
    density: float
    max_activation: float
    mean_activation: float
    mean_firing_activation: float
    histogram: list[int]
    histogram_edges: list[float]
    examples: list[Example]


@dataclass(frozen=True)
class CollectionSpec:
    """Everything that determines a collection's examples (its identity)."""

    model_id: str
    model_revision: str | None
    sae_hash: str
    layer: int
    corpus: str
    corpus_fingerprint: str
    window: int
    seed: int
    test_fraction: float
    n_tokens: int
    settings: dict[str, Any]

    def key(self) -> str:
        """Stable hash of the spec: the same inputs always map to the same collection."""
        return content_hash(sorted(self.__dict__.items()))


def collection_by_key(session: Session, spec: CollectionSpec) -> Collection | None:
    """The collection row for ``spec`` whatever its status (a killed run leaves ``running``,
    whose stored features a resumed run keeps); the key is unique."""
    return session.scalar(select(Collection).where(Collection.key == spec.key()))


def find_collection(session: Session, spec: CollectionSpec) -> Collection | None:
    """A finished collection with this exact spec, if any (re-running it is a no-op)."""
    row = collection_by_key(session, spec)
    return row if row is not None and row.status == "ok" else None


def features_done(session: Session, collection_id: int) -> set[int]:
    """Feature indices whose examples from this collection are already stored."""
    rows = session.scalars(select(Feature.index).where(Feature.collection_id == collection_id))
    return set(rows)


def start_collection(session: Session, sae_id: int, spec: CollectionSpec,
                     run_id: int | None) -> Collection:
    """Create (or reuse, after a crash) the collection row for ``spec``."""
    found = session.scalar(select(Collection).where(Collection.key == spec.key()))
    if found is not None:
        found.status, found.run_id = "running", run_id
        return found
    row = Collection(
        sae_id=sae_id, key=spec.key(), model_id=spec.model_id,
        model_revision=spec.model_revision, layer=spec.layer, corpus=spec.corpus,
        corpus_fingerprint=spec.corpus_fingerprint, window=spec.window, seed=spec.seed,
        settings={**spec.settings, "test_fraction": spec.test_fraction,
                  "tokens": spec.n_tokens},
        run_id=run_id,
    )
    session.add(row)
    session.flush()
    return row


def finish_collection(session: Session, collection_id: int, n_tokens: int) -> None:
    """Mark a collection complete."""
    collection = session.get(Collection, collection_id)
    if collection is None:
        raise NotFoundError(f"collection {collection_id} vanished; re-run `autolabel collect`")
    collection.status, collection.n_tokens, collection.finished_at = "ok", n_tokens, utcnow()


def store_feature_results(session: Session, sae_id: int, collection_id: int,
                          results: Iterable[FeatureResultLike]) -> int:
    """Upsert features' statistics and replace their examples from this collection."""
    count = 0
    for result in results:
        feature = _upsert_feature(session, sae_id, collection_id, result)
        session.execute(delete(ExampleRow).where(
            ExampleRow.feature_id == feature.id, ExampleRow.collection_id == collection_id))
        session.add_all(_example_rows(feature.id, collection_id, result))
        count += 1
    session.flush()
    return count


def _upsert_feature(session: Session, sae_id: int, collection_id: int,
                    result: FeatureResultLike) -> Feature:
    """Get-or-create the feature row and overwrite its statistics."""
    feature = session.scalar(
        select(Feature).where(Feature.sae_id == sae_id, Feature.index == result.feature)
    ) or Feature(sae_id=sae_id, index=result.feature)
    feature.collection_id = collection_id
    feature.n_tokens, feature.n_firing = result.n_tokens, result.n_firing
    feature.density, feature.max_activation = result.density, result.max_activation
    feature.mean_activation = result.mean_activation
    feature.mean_firing_activation = result.mean_firing_activation
    feature.histogram = {"counts": list(result.histogram),
                         "edges": list(result.histogram_edges)}
    feature.updated_at = utcnow()
    session.add(feature)
    session.flush()
    return feature


def _example_rows(feature_id: int, collection_id: int,
                  result: FeatureResultLike) -> list[ExampleRow]:
    """Example rows with token ids and activations packed as compact blobs."""
    return [
        ExampleRow(
            feature_id=feature_id, collection_id=collection_id, split=ex.split, kind=ex.kind,
            bin=ex.bin, rank=ex.rank, document_id=ex.document_id, start=ex.start,
            token_ids=pack_array(ex.token_ids, TOKEN_DTYPE),
            activations=pack_array(ex.activations, ACT_DTYPE),
            max_activation=float(ex.max_activation),
        )
        for ex in result.examples
    ]


def select_features(session: Session, sae_id: int, spec: str | None,
                    d_sae: int) -> list[Feature]:
    """Collected features of an SAE, optionally restricted by a range spec like ``0:64``."""
    query = select(Feature).where(Feature.sae_id == sae_id, Feature.collection_id.is_not(None))
    if spec:
        query = query.where(Feature.index.in_(parse_feature_range(spec, d_sae)))
    return list(session.scalars(query.order_by(Feature.index)))


