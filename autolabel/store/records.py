"""Features as lossless records: the dicts that ``autolabel export --format jsonl`` writes.

A record is one feature with everything that belongs to it: its SAE, the collections its
examples came from, statistics, examples (blobs as base64), explanations with their scores
(each floor named by its source's identity, not its id; with validation value, null summary,
CI and verdict) and embeddings, and finally its label (derived: the chosen candidate with its
verdict, recomputed on import). Field order is fixed
by the specs below and every list is sorted by natural key, so the same database content always
gives the same record; :mod:`autolabel.store.imports` writes records back idempotently. Run ids,
timestamps, LLM call logs, audits and flags are not part of a record (they belong to a run).

The specs double as the JSON types accepted on import (``autolabel.export`` validates lines
with them): ``None`` in a type tuple allows null; ``float`` accepts ints too (JSON does not
tell 1.0 from 1).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from autolabel.db import Collection, Database, Embedding, Explanation, Feature, SAERecord, Score
from autolabel.db import Example as ExampleRow
from autolabel.errors import NotFoundError
from autolabel.store.collections import select_features
from autolabel.store.labels import Label, feature_labels
from autolabel.store.saes import find_sae

Progress = Callable[[int, int], None]  # (done, total)
FieldSpec = dict[str, tuple[Any, ...]]
FORMAT_TAG = "autolabel.feature/1"
CHUNK = 128  # features loaded per read transaction

_S, _I, _F, _B, _D = (str,), (int,), (float, int), (bool,), (dict,)
_OS, _OI, _OF, _OD = (str, None), (int, None), (float, int, None), (dict, None)
SAE_FIELDS: FieldSpec = {
    "name": _S, "source": _S, "release": _OS, "sae_id": _OS, "path": _OS, "model_id": _OS,
    "hook_name": _S, "layer": _OI, "d_in": _I, "d_sae": _I, "architecture": _S,
    "content_hash": _S, "metrics": _OD}
COLLECTION_FIELDS: FieldSpec = {
    "key": _S, "model_id": _S, "model_revision": _OS, "layer": _I, "corpus": _S,
    "corpus_fingerprint": _OS, "window": _I, "seed": _I, "n_tokens": _I, "settings": _D,
    "status": _S}
FEATURE_FIELDS: FieldSpec = {
    "index": _I, "n_tokens": _I, "n_firing": _I, "density": _F, "max_activation": _F,
    "mean_activation": _F, "mean_firing_activation": _F, "histogram": _OD}
EXAMPLE_FIELDS: FieldSpec = {
    "split": _S, "kind": _S, "bin": _OI, "rank": _I, "document_id": _S, "start": _I,
    "max_activation": _F}
EXPLANATION_FIELDS: FieldSpec = {
    "explainer": _S, "llm_model": _S, "prompt_hash": _S, "candidate": _I, "status": _S,
    "text": _OS, "error": _OS, "raw_reply": _OS, "settings": _D, "is_best": _B}
SCORE_FIELDS: FieldSpec = {
    "scorer": _S, "simulator": _S, "value": _OF, "floor_value": _OF, "n_examples": _I,
    "status": _S, "details": _D}
# Issue 13's columns (migration 0009): always exported; optional on import, so a file written
# before them still imports (they are then NULL, as in a database made before them).
SCORE_TRUST_FIELDS: FieldSpec = {
    "validation_value": _OF, "null_mean": _OF, "null_p95": _OF, "null_n": _OI,
    "ci_low": _OF, "ci_high": _OF, "verdict": _OS}
EMBEDDING_FIELDS: FieldSpec = {"model": _S, "dim": _I}
FLOOR_FIELDS: FieldSpec = {
    "sae": _S, "index": _I, "explainer": _S, "llm_model": _S, "prompt_hash": _S,
    "candidate": _I}


def label_record(label: Label) -> dict[str, Any]:
    """The feature's label (:mod:`autolabel.store.labels`) as exported: derived from the rows
    above, so it is ignored on import and recomputed there. The chosen explanation is named
    by its identity, not its id."""
    return {"text": label.text, "explainer": label.explainer, "llm_model": label.llm_model,
            "scorer": label.scorer, "simulator": label.simulator, "score": label.score,
            "floor": label.floor, "null_p95": label.null_p95, "ci_low": label.ci_low,
            "ci_high": label.ci_high, "verdict": label.verdict,
            "selected_on": label.selected_on, "validation_score": label.validation_score}


def no_progress(done: int, total: int) -> None:
    """Progress sink used when the caller shows none."""


def exported_feature_ids(database: Database, sae_name: str | None,
                         features: str | None) -> list[int]:
    """Ids of an SAE's collected features (optionally a range like ``0:64``), by index; a
    clear error when there are none, since an empty export is always a mistake."""
    with database.session() as session:
        sae = find_sae(session, sae_name)
        ids = [f.id for f in select_features(session, sae.id, features, sae.d_sae)]
    if not ids:
        where = f" in {features!r}" if features else ""
        raise NotFoundError(f"SAE {sae.name!r} has no collected features{where}; "
                            "run `autolabel collect` first")
    return ids


def feature_records(database: Database, feature_ids: Sequence[int],
                    progress: Progress = no_progress) -> Iterator[dict[str, Any]]:
    """The lossless record of each feature, in the given order, read in chunks (one short read
    transaction per chunk, so a large export never holds the database)."""
    for start in range(0, len(feature_ids), CHUNK):
        chunk = list(feature_ids[start:start + CHUNK])
        with database.session() as session:
            records = _load_chunk(session, chunk)
        yield from (records[fid] for fid in chunk)
        progress(start + len(chunk), len(feature_ids))


def _columns(row: Any, fields: FieldSpec) -> dict[str, Any]:
    """The named attributes of an ORM row, in spec order."""
    return {name: getattr(row, name) for name in fields}


def _b64(blob: bytes) -> str:
    """Blobs travel as base64 of their stored (little-endian) bytes: exact and compact."""
    return base64.b64encode(blob).decode("ascii")


def _load_chunk(session: Session, feature_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Records for a chunk of features, with a fixed number of queries per chunk."""
    feats = list(session.scalars(select(Feature).where(Feature.id.in_(feature_ids))))
    saes = {s.id: s for s in session.scalars(
        select(SAERecord).where(SAERecord.id.in_({f.sae_id for f in feats})))}
    examples = _group(session.scalars(
        select(ExampleRow).where(ExampleRow.feature_id.in_(feature_ids))), "feature_id")
    coll_ids = {f.collection_id for f in feats} | {e.collection_id for rows in examples.values()
                                                   for e in rows}
    colls = {c.id: c for c in session.scalars(select(Collection).where(
        Collection.id.in_({c for c in coll_ids if c is not None})))}
    expls = _group(session.scalars(select(Explanation).where(
        Explanation.feature_id.in_(feature_ids))), "feature_id")
    children = _explanation_children(session, [e.id for rows in expls.values() for e in rows])
    labels = feature_labels(session, feature_ids)
    return {f.id: {**_record(saes[f.sae_id], f, colls, examples.get(f.id, []),
                             expls.get(f.id, []), children),
                   "label": label_record(labels[f.id])} for f in feats}


def _group(rows: Iterable[Any], attr: str) -> dict[int, list[Any]]:
    """Rows grouped by one of their integer attributes."""
    out: dict[int, list[Any]] = {}
    for row in rows:
        out.setdefault(getattr(row, attr), []).append(row)
    return out


def _explanation_children(session: Session, expl_ids: list[int]) -> dict[str, Any]:
    """Scores and embeddings of the explanations, and the identities of the floors' sources."""
    scores = list(session.scalars(select(Score).where(Score.explanation_id.in_(expl_ids))))
    embeds = session.scalars(select(Embedding).where(Embedding.explanation_id.in_(expl_ids)))
    floor_ids = {s.floor_explanation_id for s in scores if s.floor_explanation_id is not None}
    floors = session.execute(
        select(Explanation, Feature.index, SAERecord.content_hash)
        .join(Feature, Explanation.feature_id == Feature.id)
        .join(SAERecord, Feature.sae_id == SAERecord.id)
        .where(Explanation.id.in_(floor_ids)))
    return {"scores": _group(scores, "explanation_id"),
            "embeddings": _group(embeds, "explanation_id"),
            "floors": {e.id: {"sae": sae_hash, "index": index, "explainer": e.explainer,
                              "llm_model": e.llm_model, "prompt_hash": e.prompt_hash,
                              "candidate": e.candidate}
                       for e, index, sae_hash in floors}}


def _record(sae: SAERecord, feature: Feature, colls: dict[int, Collection],
            examples: list[ExampleRow], expls: list[Explanation],
            children: dict[str, Any]) -> dict[str, Any]:
    """One feature's record; every list sorted by natural key (deterministic bytes)."""
    used = {feature.collection_id} | {e.collection_id for e in examples}
    keys = {cid: colls[cid].key for cid in used if cid is not None}
    exs = sorted(examples, key=lambda e: (keys[e.collection_id], e.split, e.kind, e.rank))
    ordered = sorted(expls, key=lambda e: (e.explainer, e.llm_model, e.prompt_hash,
                                           e.candidate))
    return {
        "format": FORMAT_TAG,
        "sae": _columns(sae, SAE_FIELDS),
        "collections": [_columns(colls[cid], COLLECTION_FIELDS)
                        for cid in sorted(keys, key=keys.__getitem__)],
        "feature": {**_columns(feature, FEATURE_FIELDS),
                    "collection": keys.get(feature.collection_id or -1)},
        "examples": [{"collection": keys[e.collection_id], **_columns(e, EXAMPLE_FIELDS),
                      "token_ids": _b64(e.token_ids), "activations": _b64(e.activations)}
                     for e in exs],
        "explanations": [_explanation_record(e, children) for e in ordered],
    }


def _explanation_record(expl: Explanation, children: dict[str, Any]) -> dict[str, Any]:
    """An explanation with its scores (each naming its floor's source) and embeddings."""
    scores = sorted(children["scores"].get(expl.id, []), key=lambda s: (s.scorer, s.simulator))
    embeds = sorted(children["embeddings"].get(expl.id, []), key=lambda m: m.model)
    return {
        **_columns(expl, EXPLANATION_FIELDS),
        "scores": [{**_columns(s, SCORE_FIELDS), **_columns(s, SCORE_TRUST_FIELDS),
                    "floor_explanation": children["floors"].get(s.floor_explanation_id)}
                   for s in scores],
        "embeddings": [{**_columns(m, EMBEDDING_FIELDS), "vector": _b64(m.vector)}
                       for m in embeds],
    }
