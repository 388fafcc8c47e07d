"""Reading and writing stage results: SAEs, collections, features and their examples.

Stages compute in memory and hand their results here; every write is one transaction, so a
killed process leaves either the whole result of a step or nothing (never partial rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from autolabel.db import (
    Collection,
    Example,
    Feature,
    SAERecord,
    pack_array,
    unpack_array,
    utcnow,
)
from autolabel.errors import InputError, NotFoundError

if TYPE_CHECKING:
    from autolabel.collect import FeatureResult
    from autolabel.saes import LoadedSAE

TOKEN_DTYPE = "int32"
ACT_DTYPE = "float32"


def sae_name(sae: LoadedSAE) -> str:
    """A short, human-typable handle for an SAE (used as ``SAE`` in ``SAE:IDX``)."""
    if sae.release and sae.sae_id:
        return f"{sae.release}:{sae.sae_id}"
    if sae.source == "default" or sae.path is None:
        return sae.source
    return sae.path.name


def register_sae(session: Session, sae: LoadedSAE, layer: int | None,
                 metrics: dict[str, Any] | None = None) -> SAERecord:
    """Insert the SAE if its weights hash is new; return the existing row otherwise."""
    found = session.scalar(select(SAERecord).where(SAERecord.content_hash == sae.content_hash))
    if found is not None:
        if metrics and not found.metrics:
            found.metrics = metrics
        return found
    name = sae_name(sae)
    if session.scalar(select(SAERecord.id).where(SAERecord.name == name)) is not None:
        name = f"{name}@{sae.content_hash[:8]}"  # same handle, different weights (retrained)
    record = SAERecord(
        name=name, source=sae.source, release=sae.release, sae_id=sae.sae_id,
        path=str(sae.path) if sae.path else None, model_id=sae.model_id,
        hook_name=sae.hook_name, layer=layer, d_in=sae.d_in, d_sae=sae.d_sae,
        architecture=sae.architecture, content_hash=sae.content_hash, metrics=metrics,
    )
    session.add(record)
    session.flush()
    return record


def find_sae(session: Session, name: str | None) -> SAERecord:
    """Look an SAE up by name, id or hash prefix; with no name, the only (or newest) one."""
    if not name:
        sae = session.scalar(select(SAERecord).order_by(SAERecord.id.desc()))
        if sae is None:
            raise NotFoundError("no SAE in the database yet; run `autolabel collect` first")
        return sae
    query = select(SAERecord).where(
        (SAERecord.name == name) | (SAERecord.content_hash.startswith(name))
    )
    if name.isdigit():
        query = select(SAERecord).where(SAERecord.id == int(name))
    sae = session.scalar(query)
    if sae is None:
        known = ", ".join(session.scalars(select(SAERecord.name)).all()) or "none"
        raise NotFoundError(
            f"no SAE named {name!r} (known: {known}); see `autolabel features list`"
        )
    return sae


def parse_feature_ref(ref: str) -> tuple[str | None, int]:
    """Split ``SAE:IDX`` (or a bare ``IDX``) into its parts; the SAE name may contain ':'."""
    head, _, tail = ref.rpartition(":")
    if not tail.isdigit():
        raise InputError(f"bad feature reference {ref!r}; use SAE:INDEX, e.g. default:12")
    return (head or None), int(tail)


def parse_feature_range(spec: str, d_sae: int) -> list[int]:
    """Parse ``0:512``, ``1,5,9``, ``0:64,100`` or ``all`` into sorted unique indices."""
    if spec.strip() == "all":
        return list(range(d_sae))
    indices: set[int] = set()
    try:
        for part in spec.split(","):
            if ":" in part:
                lo, hi = part.split(":")
                indices.update(range(int(lo or 0), int(hi or d_sae)))
            elif part.strip():
                indices.add(int(part))
    except ValueError:
        raise InputError(f"bad --features {spec!r}; use e.g. 0:512, 1,5,9 or all") from None
    bad = [i for i in indices if not 0 <= i < d_sae]
    if bad or not indices:
        raise InputError(
            f"--features {spec!r} selects {'nothing' if not indices else f'index {bad[0]}'}; "
            f"this SAE has features 0..{d_sae - 1}"
        )
    return sorted(indices)


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
        from autolabel.db import content_hash

        return content_hash(sorted(self.__dict__.items()))


def find_collection(session: Session, spec: CollectionSpec) -> Collection | None:
    """A finished collection with this exact spec, if any (re-running it is a no-op)."""
    return session.scalar(
        select(Collection).where(Collection.key == spec.key(), Collection.status == "ok")
    )


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
                          results: Iterable[FeatureResult]) -> int:
    """Upsert features' statistics and replace their examples from this collection."""
    count = 0
    for result in results:
        feature = _upsert_feature(session, sae_id, collection_id, result)
        session.execute(delete(Example).where(
            Example.feature_id == feature.id, Example.collection_id == collection_id))
        session.add_all(_example_rows(feature.id, collection_id, result))
        count += 1
    session.flush()
    return count


def _upsert_feature(session: Session, sae_id: int, collection_id: int,
                    result: FeatureResult) -> Feature:
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


def _example_rows(feature_id: int, collection_id: int, result: FeatureResult) -> list[Example]:
    """Example rows with token ids and activations packed as compact blobs."""
    return [
        Example(
            feature_id=feature_id, collection_id=collection_id, split=ex.split, kind=ex.kind,
            bin=ex.bin, rank=ex.rank, document_id=ex.document_id, start=ex.start,
            token_ids=pack_array(ex.token_ids, TOKEN_DTYPE),
            activations=pack_array(ex.activations, ACT_DTYPE),
            max_activation=float(ex.max_activation),
        )
        for ex in result.examples
    ]


@dataclass
class StoredExample:
    """An example read back from the database, arrays unpacked."""

    split: str
    kind: str
    bin: int | None
    rank: int
    document_id: str
    start: int
    token_ids: np.ndarray
    activations: np.ndarray
    max_activation: float


def load_examples(session: Session, feature_id: int, split: str | None = None,
                  kinds: Sequence[str] | None = None) -> list[StoredExample]:
    """A feature's examples from its current collection, optionally filtered."""
    feature = session.get(Feature, feature_id)
    if feature is None or feature.collection_id is None:
        return []
    query = select(Example).where(Example.feature_id == feature_id,
                                  Example.collection_id == feature.collection_id)
    if split:
        query = query.where(Example.split == split)
    if kinds:
        query = query.where(Example.kind.in_(list(kinds)))
    rows = session.scalars(query.order_by(Example.split, Example.kind, Example.rank))
    return [
        StoredExample(
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
    examples: list[StoredExample]
    tokens: dict[int, str]  # token id -> decoded text, for every id in the examples
    explanations: list[dict[str, Any]]

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
            "histogram": f.histogram, "explanations": self.explanations,
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


def feature_payload(database: Any, ref: str) -> FeaturePayload:
    """Load a feature, its examples and the token strings needed to show them."""
    from autolabel.subject import load_tokenizer

    with database.session() as session:
        sae, feature = get_feature(session, ref)
        examples = load_examples(session, feature.id)
        model_id = feature_model_id(session, feature)
        explanations = feature_explanations(session, feature.id)
    ids = sorted({int(i) for e in examples for i in e.token_ids})
    tokens: dict[int, str] = {}
    if ids and model_id:
        tokenizer = load_tokenizer(model_id)
        tokens = {i: tokenizer.decode([i]) for i in ids}
    return FeaturePayload(sae=sae, feature=feature, examples=examples, tokens=tokens,
                          explanations=explanations)


def select_features(session: Session, sae_id: int, spec: str | None,
                    d_sae: int) -> list[Feature]:
    """Collected features of an SAE, optionally restricted by a range spec like ``0:64``."""
    query = select(Feature).where(Feature.sae_id == sae_id, Feature.collection_id.is_not(None))
    if spec:
        query = query.where(Feature.index.in_(parse_feature_range(spec, d_sae)))
    return list(session.scalars(query.order_by(Feature.index)))


class TokenDecoder:
    """Token id -> text, memoised (one tokenizer call per distinct id per run)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, ids: Sequence[int]) -> list[str]:
        missing = sorted({int(i) for i in ids} - self.cache.keys())
        if missing:
            texts = self.tokenizer.batch_decode([[i] for i in missing])
            self.cache.update(zip(missing, texts, strict=True))
        return [self.cache[int(i)] for i in ids]


def existing_explanations(session: Session, feature_ids: Sequence[int], explainer: str,
                          llm_model: str, prompt_hash: str) -> dict[tuple[int, int], Any]:
    """(feature id, candidate) -> Explanation row for one explainer identity."""
    from autolabel.db import Explanation

    rows = session.scalars(select(Explanation).where(
        Explanation.feature_id.in_(list(feature_ids)), Explanation.explainer == explainer,
        Explanation.llm_model == llm_model, Explanation.prompt_hash == prompt_hash))
    return {(r.feature_id, r.candidate): r for r in rows}


def ok_explanations(session: Session, feature_ids: Sequence[int]) -> list[Any]:
    """All ``ok`` explanations of the given features (the ones worth scoring)."""
    from autolabel.db import Explanation

    return list(session.scalars(select(Explanation).where(
        Explanation.feature_id.in_(list(feature_ids)), Explanation.status == "ok"
    ).order_by(Explanation.feature_id, Explanation.id)))


def scored_keys(session: Session, explanation_ids: Sequence[int], scorer: str,
                simulator: str) -> set[int]:
    """Explanation ids that already have this scorer's score."""
    from autolabel.db import Score

    return set(session.scalars(select(Score.explanation_id).where(
        Score.explanation_id.in_(list(explanation_ids)), Score.scorer == scorer,
        Score.simulator == simulator)))


def mark_best(session: Session, feature_ids: Sequence[int], scorer: str = "simulation") -> None:
    """Per feature, flag the explanation with the highest score of ``scorer`` as best."""
    from autolabel.db import Explanation, Score

    for fid in feature_ids:
        rows = session.execute(select(Explanation, Score.value).join(
            Score, Score.explanation_id == Explanation.id).where(
            Explanation.feature_id == fid, Score.scorer == scorer, Score.value.is_not(None))
        ).all()
        if not rows:
            continue
        best = max(rows, key=lambda r: (r[1], -r[0].id))[0]
        for expl in session.scalars(select(Explanation).where(Explanation.feature_id == fid)):
            expl.is_best = expl.id == best.id


def score_stats(session: Session, sae_name: str | None = None) -> list[dict[str, Any]]:
    """Score distributions per (SAE, explainer, scorer, simulator), each with its floor."""
    from autolabel.db import Explanation, Score

    query = (select(SAERecord.name, Explanation.explainer, Score.scorer, Score.simulator,
                    Score.value, Score.floor_value)
             .join(Explanation, Score.explanation_id == Explanation.id)
             .join(Feature, Explanation.feature_id == Feature.id)
             .join(SAERecord, Feature.sae_id == SAERecord.id))
    if sae_name:
        query = query.where(SAERecord.id == find_sae(session, sae_name).id)
    groups: dict[tuple[str, str, str, str], list[tuple[float | None, float | None]]] = {}
    for name, explainer, scorer, sim, value, floor in session.execute(query):
        groups.setdefault((name, explainer, scorer, sim), []).append((value, floor))
    return [_summarise(key, pairs) for key, pairs in sorted(groups.items())]


def _summarise(key: tuple[str, str, str, str],
               pairs: list[tuple[float | None, float | None]]) -> dict[str, Any]:
    """Mean/median/quartiles of values and floors, and how often a score beats its floor."""
    values = np.array([v for v, _ in pairs if v is not None], dtype=float)
    floors = np.array([f for _, f in pairs if f is not None], dtype=float)
    both = [(v, f) for v, f in pairs if v is not None and f is not None]

    def stat(arr: np.ndarray, fn: Any) -> float | None:
        return float(fn(arr)) if arr.size else None

    return {
        "sae": key[0], "explainer": key[1], "scorer": key[2], "simulator": key[3],
        "n": len(pairs), "n_valid": int(values.size),
        "mean": stat(values, np.mean), "median": stat(values, np.median),
        "p25": stat(values, lambda a: np.percentile(a, 25)),
        "p75": stat(values, lambda a: np.percentile(a, 75)),
        "floor_mean": stat(floors, np.mean),
        "above_floor": (sum(v > f for v, f in both) / len(both)) if both else None,
    }


def feature_explanations(session: Session, feature_id: int) -> list[dict[str, Any]]:
    """A feature's explanations with status, provenance and scores (each with its floor)."""
    from autolabel.db import Explanation, Score

    out = []
    for expl in session.scalars(select(Explanation).where(Explanation.feature_id == feature_id)
                                .order_by(Explanation.id)):
        scores = session.scalars(select(Score).where(Score.explanation_id == expl.id)).all()
        out.append({
            "id": expl.id, "explainer": expl.explainer, "llm_model": expl.llm_model,
            "prompt_hash": expl.prompt_hash[:12], "candidate": expl.candidate,
            "status": expl.status, "text": expl.text, "error": expl.error,
            "is_best": expl.is_best,
            "scores": [{"scorer": s.scorer, "simulator": s.simulator, "value": s.value,
                        "floor": s.floor_value, "status": s.status, "n": s.n_examples}
                       for s in scores],
        })
    return out
