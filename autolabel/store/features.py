"""Reading features back: their rows, their examples (unpacked) and what a reader is shown."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from autolabel.db import Collection, Feature, SAERecord, unpack_array
from autolabel.db import Example as ExampleRow
from autolabel.errors import NotFoundError
from autolabel.examples import Example
from autolabel.selection import parse_feature_ref
from autolabel.store.collections import ACT_DTYPE, TOKEN_DTYPE
from autolabel.store.explanations import feature_explanations
from autolabel.store.labels import Label, feature_labels
from autolabel.store.saes import find_sae

TokenizerLoader = Callable[[str], Any]  # model id -> tokenizer (with .decode)


def load_examples(session: Session, feature_id: int, split: str | None = None,
                  kinds: Sequence[str] | None = None) -> list[Example]:
    """A feature's examples from its current collection, optionally filtered."""
    feature = session.get(Feature, feature_id)
    if feature is None or feature.collection_id is None:
        return []
    query = select(ExampleRow).where(ExampleRow.feature_id == feature_id,
                                     ExampleRow.collection_id == feature.collection_id)
    if split:
        query = query.where(ExampleRow.split == split)
    if kinds:
        query = query.where(ExampleRow.kind.in_(list(kinds)))
    rows = session.scalars(query.order_by(ExampleRow.split, ExampleRow.kind, ExampleRow.rank))
    return [
        Example(
            split=r.split, kind=r.kind, bin=r.bin, rank=r.rank, document_id=r.document_id,
            start=r.start, token_ids=unpack_array(r.token_ids, TOKEN_DTYPE),
            activations=unpack_array(r.activations, ACT_DTYPE),
            max_activation=r.max_activation,
        )
        for r in rows
    ]


def get_feature(session: Session, ref: str) -> tuple[SAERecord, Feature]:
    """Resolve ``SAE:IDX`` to its rows, with a helpful error when it was never collected."""
    name, index = parse_feature_ref(ref)
    sae = find_sae(session, name)
    feature = session.scalar(
        select(Feature).where(Feature.sae_id == sae.id, Feature.index == index))
    if feature is None:
        raise NotFoundError(
            f"feature {index} of SAE {sae.name!r} has not been collected; run "
            f"`autolabel collect --features {index}`"
        )
    return sae, feature


def list_features(session: Session, sae_name: str | None = None, limit: int = 50,
                  offset: int = 0) -> tuple[SAERecord, list[Feature], int]:
    """A page of an SAE's collected features (by index) and the total count."""
    sae = find_sae(session, sae_name)
    total = session.scalar(select(func.count()).where(Feature.sae_id == sae.id)) or 0
    rows = session.scalars(
        select(Feature).where(Feature.sae_id == sae.id).order_by(Feature.index)
        .limit(limit).offset(offset)
    ).all()
    return sae, list(rows), int(total)


@dataclass
class FeaturePayload:
    """Everything shown about one feature, detached from the session."""

    sae: SAERecord
    feature: Feature
    examples: list[Example]
    tokens: dict[int, str]  # token id -> decoded text, for every id in the examples
    explanations: list[dict[str, Any]]
    label: Label | None = None  # the feature's label (autolabel.store.labels)

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Token strings for a window."""
        return [self.tokens.get(int(i), f"<{i}>") for i in ids]

    def as_json(self) -> dict[str, Any]:
        """JSON-ready view (``--json`` and exports)."""
        f = self.feature
        return {
            "feature": f"{self.sae.name}:{f.index}", "sae": self.sae.name, "index": f.index,
            "density": f.density, "max_activation": f.max_activation,
            "mean_activation": f.mean_activation, "n_tokens": f.n_tokens,
            "histogram": f.histogram,
            "label": self.label.as_dict() if self.label else None,
            "explanations": self.explanations,
            "examples": [
                {"split": e.split, "kind": e.kind, "bin": e.bin, "rank": e.rank,
                 "document_id": e.document_id, "start": e.start,
                 "tokens": self.decode(e.token_ids.tolist()),
                 "activations": [round(float(a), 4) for a in e.activations],
                 "max_activation": e.max_activation}
                for e in self.examples
            ],
        }


def feature_model_id(session: Session, feature: Feature) -> str | None:
    """The subject model a feature's examples were collected with (for decoding tokens)."""
    if feature.collection_id is None:
        return None
    collection = session.get(Collection, feature.collection_id)
    return collection.model_id if collection else None


def feature_payload(database: Any, ref: str, load_tokenizer: TokenizerLoader) -> FeaturePayload:
    """Load a feature, its examples and the token strings needed to show them."""
    with database.session() as session:
        sae, feature = get_feature(session, ref)
        examples = load_examples(session, feature.id)
        model_id = feature_model_id(session, feature)
        explanations = feature_explanations(session, feature.id)
        label = feature_labels(session, [feature.id])[feature.id]
    ids = sorted({int(i) for e in examples for i in e.token_ids})
    tokens: dict[int, str] = {}
    if ids and model_id:
        tokenizer = load_tokenizer(model_id)
        tokens = {i: tokenizer.decode([i]) for i in ids}
    return FeaturePayload(sae=sae, feature=feature, examples=examples, tokens=tokens,
                          explanations=explanations, label=label)


