"""Export features (Neuronpedia-style JSON, lossless JSONL, CSV) and re-import the JSONL.

Formats, chosen with ``fmt``:

- ``jsonl``: one self-contained line per feature (its SAE, the collections its examples came
  from, statistics, examples with base64 blobs, explanations with scores and embeddings).
  Field order is fixed and rows are sorted by their natural keys, so the same database content
  always gives the same bytes; :func:`import_jsonl` reads it back idempotently. Not exported:
  run ids, timestamps, LLM call logs (``llm_call_id``), audits and flags (they belong to an
  audit run, not to a feature).
- ``neuronpedia``: Neuronpedia's feature JSON (``modelId``, ``layer`` — Neuronpedia's source
  id, here the SAE id or name —, ``index`` as a string, ``frac_nonzero``, ``maxActApprox``,
  ``freq_hist_data_bar_*``, ``explanations``, ``activations: [{tokens, values, maxValue,
  maxValueTokenIndex}]``) plus autolabel fields (scores with floors, statuses, splits).
  ``out`` a directory: one ``<index>.json`` per feature and an ``index.json`` listing them;
  ``out`` ending in ``.json``: one JSON list; no ``out``: the JSON list on stdout.
- ``csv``: one row per explanation, for spreadsheets.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import csv
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from autolabel.db import (
    Collection,
    Database,
    Embedding,
    Example,
    Explanation,
    Feature,
    SAERecord,
    Score,
    unpack_array,
    utcnow,
)
from autolabel.errors import InputError, NotFoundError
from autolabel.examples import TokenDecoder
from autolabel.store import ACT_DTYPE, TOKEN_DTYPE, find_sae, select_features

Progress = Callable[[int, int], None]  # (done, total)
FORMATS = ("neuronpedia", "jsonl", "csv")
FORMAT_TAG = "autolabel.feature/1"
CHUNK = 128  # features loaded per read transaction

# Field specs: exported field order and the JSON types accepted on import. ``None`` in a type
# tuple allows null; ``float`` accepts ints too (JSON does not tell 1.0 from 1).
_S, _I, _F, _B, _D, _L = (str,), (int,), (float, int), (bool,), (dict,), (list,)
_OS, _OI, _OF, _OD = (str, None), (int, None), (float, int, None), (dict, None)
SAE_FIELDS = {"name": _S, "source": _S, "release": _OS, "sae_id": _OS, "path": _OS,
              "model_id": _OS, "hook_name": _S, "layer": _OI, "d_in": _I, "d_sae": _I,
              "architecture": _S, "content_hash": _S, "metrics": _OD}
COLLECTION_FIELDS = {"key": _S, "model_id": _S, "model_revision": _OS, "layer": _I,
                     "corpus": _S, "corpus_fingerprint": _OS, "window": _I, "seed": _I,
                     "n_tokens": _I, "settings": _D, "status": _S}
FEATURE_FIELDS = {"index": _I, "n_tokens": _I, "n_firing": _I, "density": _F,
                  "max_activation": _F, "mean_activation": _F, "mean_firing_activation": _F,
                  "histogram": _OD}
EXAMPLE_FIELDS = {"split": _S, "kind": _S, "bin": _OI, "rank": _I, "document_id": _S,
                  "start": _I, "max_activation": _F}
EXPLANATION_FIELDS = {"explainer": _S, "llm_model": _S, "prompt_hash": _S, "candidate": _I,
                      "status": _S, "text": _OS, "error": _OS, "raw_reply": _OS,
                      "settings": _D, "is_best": _B}
SCORE_FIELDS = {"scorer": _S, "simulator": _S, "value": _OF, "floor_value": _OF,
                "n_examples": _I, "status": _S, "details": _D}
EMBEDDING_FIELDS = {"model": _S, "dim": _I}
FLOOR_FIELDS = {"sae": _S, "index": _I, "explainer": _S, "llm_model": _S, "prompt_hash": _S,
                "candidate": _I}
Enums = dict[str, tuple[str, ...]]
EXAMPLE_ENUMS: Enums = {"split": ("train", "test"), "kind": ("top", "quantile", "random")}
EXPLANATION_ENUMS: Enums = {"status": ("ok", "parse_error", "refused", "error")}
COLLECTION_ENUMS: Enums = {"status": ("running", "ok", "failed")}


def _noop(done: int, total: int) -> None:
    """Progress sink used when the caller shows none."""


# ---------------------------------------------------------------------------------------------
# Export


def export_features(database: Database, *, sae_name: str | None, fmt: str, out: Path | None,
                    features: str | None = None, progress: Progress | None = None) -> int:
    """Write an SAE's collected features in ``fmt`` to ``out`` (stdout when None); returns
    how many features were exported."""
    writers = {"neuronpedia": _write_neuronpedia, "jsonl": _write_jsonl, "csv": _write_csv}
    if fmt not in writers:
        raise InputError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    with database.session() as session:
        sae = find_sae(session, sae_name)
        ids = [f.id for f in select_features(session, sae.id, features, sae.d_sae)]
    if not ids:
        where = f" in {features!r}" if features else ""
        raise NotFoundError(f"SAE {sae.name!r} has no collected features{where}; "
                            "run `autolabel collect` first")
    writers[fmt](feature_records(database, ids, progress or _noop), out)
    return len(ids)


def feature_records(database: Database, feature_ids: Sequence[int],
                    progress: Progress = _noop) -> Iterator[dict[str, Any]]:
    """The lossless JSONL record of each feature, in the given order, read in chunks (one
    short read transaction per chunk, so a large export never holds the database)."""
    for start in range(0, len(feature_ids), CHUNK):
        chunk = list(feature_ids[start:start + CHUNK])
        with database.session() as session:
            records = _load_chunk(session, chunk)
        yield from (records[fid] for fid in chunk)
        progress(start + len(chunk), len(feature_ids))


def _columns(row: Any, fields: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
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
    examples = _group(session.scalars(select(Example).where(Example.feature_id.in_(feature_ids))),
                      "feature_id")
    coll_ids = {f.collection_id for f in feats} | {e.collection_id for rows in examples.values()
                                                   for e in rows}
    colls = {c.id: c for c in session.scalars(select(Collection).where(
        Collection.id.in_({c for c in coll_ids if c is not None})))}
    expls = _group(session.scalars(select(Explanation).where(
        Explanation.feature_id.in_(feature_ids))), "feature_id")
    children = _explanation_children(session, [e.id for rows in expls.values() for e in rows])
    return {f.id: _record(saes[f.sae_id], f, colls, examples.get(f.id, []),
                          expls.get(f.id, []), children) for f in feats}


def _group(rows: Any, attr: str) -> dict[int, list[Any]]:
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
            examples: list[Example], expls: list[Explanation],
            children: dict[str, Any]) -> dict[str, Any]:
    """One feature's JSONL record; every list sorted by natural key (deterministic bytes)."""
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
        "scores": [{**_columns(s, SCORE_FIELDS),
                    "floor_explanation": children["floors"].get(s.floor_explanation_id)}
                   for s in scores],
        "embeddings": [{**_columns(m, EMBEDDING_FIELDS), "vector": _b64(m.vector)}
                       for m in embeds],
    }


@contextlib.contextmanager
def _output(out: Path | None) -> Iterator[IO[str]]:
    """A text stream for ``out`` (stdout when None); files are written to a temporary name and
    renamed on success, so an interrupted export never leaves a truncated file behind."""
    if out is None:
        yield sys.stdout
        return
    tmp = out.with_name(out.name + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            yield fh
        os.replace(tmp, out)
    except OSError as exc:
        raise InputError(f"cannot write {out} ({exc.strerror}); choose a writable --out path"
                         ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _write_jsonl(records: Iterator[dict[str, Any]], out: Path | None) -> None:
    """One compact JSON line per feature (NaN kept as NaN: lossless, Python reads it back)."""
    with _output(out) as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")


def _write_csv(records: Iterator[dict[str, Any]], out: Path | None) -> None:
    """One row per explanation with its simulation score and floor."""
    header = ["feature", "sae", "index", "density", "max_activation", "explainer",
              "llm_model", "candidate", "status", "is_best", "text", "simulation_score",
              "simulation_floor", "simulator"]
    with _output(out) as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for record in records:
            writer.writerows(_csv_rows(record))


def _csv_rows(record: dict[str, Any]) -> list[list[Any]]:
    """The CSV rows of one feature (none when it has no explanations)."""
    sae, feat = record["sae"], record["feature"]
    rows = []
    for expl in record["explanations"]:
        sim = next((s for s in expl["scores"] if s["scorer"] == "simulation"), None)
        rows.append([f"{sae['name']}:{feat['index']}", sae["name"], feat["index"],
                     feat["density"], feat["max_activation"], expl["explainer"],
                     expl["llm_model"], expl["candidate"], expl["status"],
                     int(expl["is_best"]), expl["text"] or "",
                     _blank(sim and sim["value"]), _blank(sim and sim["floor_value"]),
                     sim["simulator"] if sim else ""])
    return rows


def _blank(value: Any) -> Any:
    """Missing values as empty cells."""
    return "" if value is None else value


# ---------------------------------------------------------------------------------------------
# Neuronpedia


def _write_neuronpedia(records: Iterator[dict[str, Any]], out: Path | None) -> None:
    """A directory of per-feature files plus index.json, or one JSON list (``.json``/stdout)."""
    decoders: dict[str, TokenDecoder] = {}
    items = (neuronpedia_feature(r, _decoder(r, decoders)) for r in records)
    if out is not None and out.suffix.lower() != ".json":
        _write_neuronpedia_dir(items, out)
        return
    with _output(out) as fh:
        fh.write("[")
        for i, item in enumerate(items):
            fh.write(("," if i else "") + "\n" + json.dumps(item, ensure_ascii=False))
        fh.write("\n]\n")


def _write_neuronpedia_dir(items: Iterator[dict[str, Any]], out: Path) -> None:
    """``<index>.json`` per feature and ``index.json`` (SAE identity, one line per feature)."""
    listing: list[dict[str, Any]] = []
    head: dict[str, Any] = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for item in items:
            name = f"{item['index']}.json"
            (out / name).write_text(json.dumps(item, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
            head = {k: item[k] for k in ("modelId", "layer", "saeName", "saeHash", "hookName")}
            best = next((e for e in item["explanations"] if e["isBest"]), None)
            listing.append({"index": item["index"], "file": name,
                            "description": best["description"] if best else None,
                            "frac_nonzero": item["frac_nonzero"],
                            "maxActApprox": item["maxActApprox"]})
        index = {"format": "autolabel.neuronpedia/1", **head, "features": listing}
        (out / "index.json").write_text(json.dumps(index, ensure_ascii=False, indent=1) + "\n",
                                        encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {out} ({exc.strerror}); choose a writable --out "
                         "directory") from None


def _decoder(record: dict[str, Any], cache: dict[str, TokenDecoder]) -> TokenDecoder | None:
    """The memoised token decoder of the model the feature's examples were collected with."""
    from autolabel.subject import load_tokenizer

    current = record["feature"]["collection"]
    coll = next((c for c in record["collections"] if c["key"] == current), None)
    model_id = coll["model_id"] if coll else record["sae"]["model_id"]
    if not model_id:
        return None
    if model_id not in cache:
        cache[model_id] = TokenDecoder(load_tokenizer(model_id))
    return cache[model_id]


def neuronpedia_feature(record: dict[str, Any], decode: TokenDecoder | None) -> dict[str, Any]:
    """Neuronpedia's feature JSON built from a JSONL record (examples of the current
    collection only; token strings decoded with the subject model's tokenizer)."""
    sae, feat = record["sae"], record["feature"]
    coll: dict[str, Any] = next(
        (c for c in record["collections"] if c["key"] == feat["collection"]), {})
    heights, centers = _histogram_bars(feat["histogram"])
    examples = [e for e in record["examples"] if e["collection"] == feat["collection"]]
    return {
        "modelId": coll.get("model_id") or sae["model_id"],
        "layer": sae["sae_id"] or sae["name"],
        "index": str(feat["index"]),
        "layerNumber": sae["layer"], "hookName": sae["hook_name"],
        "saeName": sae["name"], "saeHash": sae["content_hash"],
        "feature": f"{sae['name']}:{feat['index']}",
        "frac_nonzero": _finite(feat["density"]),
        "maxActApprox": _finite(feat["max_activation"]),
        "meanActivation": _finite(feat["mean_activation"]),
        "freq_hist_data_bar_heights": heights, "freq_hist_data_bar_values": centers,
        "explanations": [_np_explanation(e) for e in record["explanations"]],
        "activations": [_np_activation(e, decode) for e in sorted(examples, key=_np_order)],
    }


def _histogram_bars(histogram: dict[str, Any] | None) -> tuple[list[Any], list[float]]:
    """Bar heights and bar centres (Neuronpedia's form) from stored counts and edges."""
    if not histogram or "counts" not in histogram or "edges" not in histogram:
        return [], []
    edges = [float(e) for e in histogram["edges"]]
    return list(histogram["counts"]), [(a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)]


def _np_order(example: dict[str, Any]) -> tuple[int, int, float, str, int]:
    """Top examples first, then quantile bins (high to low), then random; strongest first."""
    kind = ("top", "quantile", "random").index(example["kind"])
    return (kind, -(example["bin"] or 0), -example["max_activation"], example["split"],
            example["rank"])


def _np_explanation(expl: dict[str, Any]) -> dict[str, Any]:
    """An explanation in Neuronpedia's field names, with autolabel's status and floors."""
    return {
        "description": expl["text"], "explanationModelName": expl["llm_model"],
        "typeName": expl["explainer"], "status": expl["status"], "isBest": expl["is_best"],
        "candidate": expl["candidate"],
        "scores": [{"scorer": s["scorer"], "simulator": s["simulator"],
                    "value": _finite(s["value"]), "floor": _finite(s["floor_value"]),
                    "nExamples": s["n_examples"], "status": s["status"]}
                   for s in expl["scores"]],
    }


def _np_activation(example: dict[str, Any], decode: TokenDecoder | None) -> dict[str, Any]:
    """A context window: token strings aligned one-to-one with activation values."""
    ids = unpack_array(base64.b64decode(example["token_ids"]), TOKEN_DTYPE).tolist()
    acts = unpack_array(base64.b64decode(example["activations"]), ACT_DTYPE)
    values = [round(float(a), 5) for a in acts]
    return {
        "tokens": decode(ids) if decode else [f"<{i}>" for i in ids],
        "tokenIds": ids, "values": values,
        "maxValue": _finite(example["max_activation"]),
        "maxValueTokenIndex": int(np.argmax(acts)) if len(values) else 0,
        "split": example["split"], "kind": example["kind"], "bin": example["bin"],
        "rank": example["rank"], "documentId": example["document_id"],
        "start": example["start"],
    }


def _finite(value: float | None) -> float | None:
    """NaN and infinities are not JSON; Neuronpedia gets null instead."""
    return None if value is None or not math.isfinite(value) else value


# ---------------------------------------------------------------------------------------------
# Import


@dataclass
class ImportSummary:
    """What an import did; a repeated import reports inserted == updated == 0."""

    features: int = 0
    inserted: int = 0  # rows created (SAEs, collections, features, examples, ...)
    updated: int = 0  # rows that existed before and whose content changed
    unresolved_floors: int = 0  # floors whose source explanation is in neither file nor DB

    def as_json(self) -> dict[str, int]:
        """JSON-ready view (``--json``)."""
        return asdict(self)


@dataclass
class _Pending:
    """A score whose floor explanation was not in the database when its line was read."""

    score_id: int
    floor: dict[str, Any]
    new: bool  # inserted by this import: linking its floor is not an update


def import_jsonl(database: Database, path: Path, progress: Progress | None = None
                 ) -> ImportSummary:
    """Import a ``jsonl`` export: one transaction per feature, natural keys, so importing the
    same file again changes nothing. Stops at the first malformed line (earlier features stay
    imported; fix the line and re-run)."""
    progress = progress or _noop
    summary = ImportSummary()
    pending: list[_Pending] = []
    total = _count_lines(path)
    try:
        for done, (number, raw) in enumerate(_read_lines(path), 1):
            pending += _import_line(database, path, number, raw, summary)
            progress(done, total)
    finally:  # also when a bad line stops the import: link what the good lines allow
        summary.unresolved_floors = _resolve_pending(database, pending, summary)
    return summary


def _import_line(database: Database, path: Path, number: int, raw: bytes,
                 summary: ImportSummary) -> list[_Pending]:
    """Validate one line, then write it in its own transaction (all of the feature or none)."""
    record = _parse_line(path, number, raw)
    try:
        with database.session() as session:
            pending = _import_record(session, record, summary)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise InputError(f"{path}:{number}: cannot be stored ({reason}); the line "
                         "contradicts the database — fix it and re-run") from None
    summary.features += 1
    return pending


def _count_lines(path: Path) -> int:
    """Non-blank lines (the progress total), counted without parsing."""
    return sum(1 for _ in _read_lines(path))


def _read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines with their 1-based numbers, streamed (bytes: decoding errors name the
    line)."""
    try:
        with path.open("rb") as fh:
            yield from ((n, line) for n, line in enumerate(fh, 1) if line.strip())
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror}); pass a file written by "
                         "`autolabel export --format jsonl`") from None


def _parse_line(path: Path, number: int, raw: bytes) -> dict[str, Any]:
    """Decode and validate one line; any problem is a one-line InputError naming the line."""
    try:
        record = json.loads(raw.decode("utf-8"))
        _check_record(record)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as exc:
        raise InputError(f"{path}:{number}: malformed export line ({_first_line(exc)}); "
                         "fix or remove it and re-run — lines already imported are kept, "
                         "importing them again is a no-op") from None
    return record


def _first_line(exc: Exception) -> str:
    """First line of an exception message."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _check(obj: Any, fields: dict[str, tuple[Any, ...]], where: str,
           enums: Enums | None = None) -> None:
    """Raise ValueError unless ``obj`` is an object whose fields have the expected types (and
    the enumerated fields allowed values); unknown extra fields are ignored."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where} is not an object")
    for name, types in fields.items():
        if name not in obj:
            raise ValueError(f"{where}.{name} is missing")
        value = obj[name]
        ok = (value is None and None in types) or (
            value is not None and isinstance(value, tuple(t for t in types if t is not None))
            and (bool in types or not isinstance(value, bool)))
        if not ok:
            raise ValueError(f"{where}.{name} has the wrong type ({type(value).__name__})")
    for name, allowed in (enums or {}).items():
        if obj[name] not in allowed:
            raise ValueError(f"{where}.{name} is {obj[name]!r}, not one of {', '.join(allowed)}")


def _check_record(rec: Any) -> None:
    """Validate a whole record before anything is written (no partial features)."""
    tag = rec.get("format") if isinstance(rec, dict) else None
    if tag != FORMAT_TAG:
        raise ValueError(f"format is {tag!r}, expected {FORMAT_TAG!r}")
    _check(rec, {"sae": _D, "collections": _L, "feature": _D, "examples": _L,
                 "explanations": _L}, "line")
    _check(rec["sae"], SAE_FIELDS, "sae")
    keys = set()
    for coll in rec["collections"]:
        _check(coll, COLLECTION_FIELDS, "collection", COLLECTION_ENUMS)
        keys.add(coll["key"])
    _check(rec["feature"], {**FEATURE_FIELDS, "collection": _OS}, "feature")
    if rec["feature"]["collection"] not in keys | {None}:
        raise ValueError("feature.collection names no collection of the line")
    for i, ex in enumerate(rec["examples"]):
        _check_example(ex, f"examples[{i}]", keys)
    for i, expl in enumerate(rec["explanations"]):
        _check_explanation(expl, f"explanations[{i}]")


def _check_example(ex: Any, where: str, keys: set[str]) -> None:
    """An example: known collection, enums, and blobs that decode to equal-length arrays."""
    _check(ex, {**EXAMPLE_FIELDS, "collection": _S, "token_ids": _S, "activations": _S},
           where, EXAMPLE_ENUMS)
    if ex["collection"] not in keys:
        raise ValueError(f"{where}.collection names no collection of the line")
    ids, acts = _unb64(ex["token_ids"], where), _unb64(ex["activations"], where)
    if len(ids) % 4 or len(ids) != len(acts):
        raise ValueError(f"{where}: token_ids and activations differ in length")


def _check_explanation(expl: Any, where: str) -> None:
    """An explanation, its scores (and floor references) and its embeddings."""
    _check(expl, {**EXPLANATION_FIELDS, "scores": _L, "embeddings": _L}, where,
           EXPLANATION_ENUMS)
    for j, score in enumerate(expl["scores"]):
        _check(score, {**SCORE_FIELDS, "floor_explanation": _OD}, f"{where}.scores[{j}]")
        if score["floor_explanation"] is not None:
            _check(score["floor_explanation"], FLOOR_FIELDS, f"{where}.scores[{j}].floor")
    for j, emb in enumerate(expl["embeddings"]):
        _check(emb, {**EMBEDDING_FIELDS, "vector": _S}, f"{where}.embeddings[{j}]")
        if len(_unb64(emb["vector"], where)) != 4 * emb["dim"]:
            raise ValueError(f"{where}.embeddings[{j}]: vector length is not dim float32s")


def _unb64(text: str, where: str) -> bytes:
    """Strict base64 decoding (ValueError naming the place on bad input)."""
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError(f"{where}: invalid base64 blob") from None


# -- writing one record


def _same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN (so re-importing NaN is not a change)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _sync(session: Session, model: type, existing: dict[Any, Any], key: Any,
          values: dict[str, Any], summary: ImportSummary) -> Any:
    """Insert the row for ``key`` or update only the fields that differ; count what changed."""
    row = existing.get(key)
    if row is None:
        row = model(**values)
        session.add(row)
        existing[key] = row
        summary.inserted += 1
        return row
    changed = [k for k, v in values.items() if not _same(getattr(row, k), v)]
    for name in changed:
        setattr(row, name, values[name])
    summary.updated += bool(changed)
    return row


def _sync_one(session: Session, model: type, found: Any, values: dict[str, Any],
              summary: ImportSummary) -> Any:
    """:func:`_sync` for a row looked up on its own (``found`` or None)."""
    return _sync(session, model, {0: found} if found is not None else {}, 0, values, summary)


def _import_record(session: Session, rec: dict[str, Any], summary: ImportSummary
                   ) -> list[_Pending]:
    """Write one validated record; returns scores whose floor could not be resolved yet."""
    sae = _import_sae(session, rec["sae"], summary)
    colls = {c["key"]: _import_collection(session, sae.id, c, summary)
             for c in rec["collections"]}
    feature = _import_feature(session, sae.id, rec["feature"], colls, summary)
    _import_examples(session, feature.id, rec["examples"], colls, summary)
    return _import_explanations(session, feature.id, rec["explanations"], summary)


def _import_sae(session: Session, data: dict[str, Any], summary: ImportSummary) -> SAERecord:
    """The SAE by weights hash; an existing row is kept as is (its name and path are local)."""
    found = session.scalar(select(SAERecord).where(
        SAERecord.content_hash == data["content_hash"]))
    if found is not None:
        return found
    values = {k: data[k] for k in SAE_FIELDS}
    if session.scalar(select(SAERecord.id).where(SAERecord.name == data["name"])) is not None:
        values["name"] = f"{data['name']}@{data['content_hash'][:8]}"  # same handle, new weights
    row = SAERecord(**values)
    session.add(row)
    session.flush()
    summary.inserted += 1
    return row


def _import_collection(session: Session, sae_id: int, data: dict[str, Any],
                       summary: ImportSummary) -> Collection:
    """The collection by key (its key already hashes the SAE and every setting)."""
    found = session.scalar(select(Collection).where(Collection.key == data["key"]))
    values = {**{k: data[k] for k in COLLECTION_FIELDS},
              "sae_id": found.sae_id if found else sae_id}
    row: Collection = _sync_one(session, Collection, found, values, summary)
    session.flush()
    return row


def _import_feature(session: Session, sae_id: int, data: dict[str, Any],
                    colls: dict[str, Collection], summary: ImportSummary) -> Feature:
    """The feature by (SAE, index); the file's statistics and current collection win."""
    found = session.scalar(select(Feature).where(Feature.sae_id == sae_id,
                                                 Feature.index == data["index"]))
    coll = colls.get(data["collection"]) if data["collection"] else None
    values = {**{k: data[k] for k in FEATURE_FIELDS}, "sae_id": sae_id,
              "collection_id": coll.id if coll else None}
    before = summary.inserted + summary.updated
    row: Feature = _sync_one(session, Feature, found, values, summary)
    if found is not None and summary.updated + summary.inserted > before:
        row.updated_at = utcnow()
    session.flush()
    return row


def _import_examples(session: Session, feature_id: int, examples: list[dict[str, Any]],
                     colls: dict[str, Collection], summary: ImportSummary) -> None:
    """Examples by (feature, collection, split, kind, rank), blobs stored byte for byte."""
    existing = {(r.collection_id, r.split, r.kind, r.rank): r for r in session.scalars(
        select(Example).where(Example.feature_id == feature_id))}
    for ex in examples:
        coll_id = colls[ex["collection"]].id
        values = {**{k: ex[k] for k in EXAMPLE_FIELDS}, "feature_id": feature_id,
                  "collection_id": coll_id, "token_ids": base64.b64decode(ex["token_ids"]),
                  "activations": base64.b64decode(ex["activations"])}
        _sync(session, Example, existing, (coll_id, ex["split"], ex["kind"], ex["rank"]),
              values, summary)


def _import_explanations(session: Session, feature_id: int, expls: list[dict[str, Any]],
                         summary: ImportSummary) -> list[_Pending]:
    """Explanations by identity, then their scores and embeddings; the file's best flag wins."""
    existing = {(r.explainer, r.llm_model, r.prompt_hash, r.candidate): r
                for r in session.scalars(select(Explanation).where(
                    Explanation.feature_id == feature_id))}
    rows = []
    for data in expls:
        key = (data["explainer"], data["llm_model"], data["prompt_hash"], data["candidate"])
        values = {**{k: data[k] for k in EXPLANATION_FIELDS}, "feature_id": feature_id}
        rows.append(_sync(session, Explanation, existing, key, values, summary))
    if any(d["is_best"] for d in expls):
        imported = {id(r) for r in rows}
        for other in existing.values():
            if id(other) not in imported and other.is_best:
                other.is_best = False
                summary.updated += 1
    session.flush()
    pending: list[_Pending] = []
    for row, data in zip(rows, expls, strict=True):
        pending += _import_scores(session, row.id, data["scores"], summary)
        _import_embeddings(session, row.id, data["embeddings"], summary)
    return pending


def _import_scores(session: Session, expl_id: int, scores: list[dict[str, Any]],
                   summary: ImportSummary) -> list[_Pending]:
    """Scores by (explanation, scorer, simulator); floors resolved now when possible."""
    existing = {(r.scorer, r.simulator): r for r in session.scalars(
        select(Score).where(Score.explanation_id == expl_id))}
    later: list[tuple[Score, dict[str, Any], bool]] = []
    for data in scores:
        new = (data["scorer"], data["simulator"]) not in existing
        values = {**{k: data[k] for k in SCORE_FIELDS}, "explanation_id": expl_id}
        floor = data["floor_explanation"]
        floor_id = _find_floor(session, floor) if floor else None
        if floor_id is not None or floor is None:
            values["floor_explanation_id"] = floor_id
        row = _sync(session, Score, existing, (data["scorer"], data["simulator"]), values,
                    summary)
        if floor is not None and floor_id is None:
            later.append((row, floor, new))
    session.flush()
    return [_Pending(row.id, floor, new) for row, floor, new in later]


def _import_embeddings(session: Session, expl_id: int, embeds: list[dict[str, Any]],
                       summary: ImportSummary) -> None:
    """Embedding vectors by (explanation, model), stored byte for byte."""
    existing = {r.model: r for r in session.scalars(
        select(Embedding).where(Embedding.explanation_id == expl_id))}
    for data in embeds:
        values = {"explanation_id": expl_id, "model": data["model"], "dim": data["dim"],
                  "vector": base64.b64decode(data["vector"])}
        _sync(session, Embedding, existing, data["model"], values, summary)


def _find_floor(session: Session, ref: dict[str, Any]) -> int | None:
    """The id of the explanation a floor reference names, if it is in the database."""
    found = session.scalar(
        select(Explanation.id)
        .join(Feature, Explanation.feature_id == Feature.id)
        .join(SAERecord, Feature.sae_id == SAERecord.id)
        .where(SAERecord.content_hash == ref["sae"], Feature.index == ref["index"],
               Explanation.explainer == ref["explainer"],
               Explanation.llm_model == ref["llm_model"],
               Explanation.prompt_hash == ref["prompt_hash"],
               Explanation.candidate == ref["candidate"]))
    return found


def _resolve_pending(database: Database, pending: list[_Pending],
                     summary: ImportSummary) -> int:
    """Link floors whose source explanation came later in the file; returns how many remain
    unresolved (their source was in neither the file nor the database)."""
    if not pending:
        return 0
    unresolved = 0
    with database.session() as session:
        for item in pending:
            floor_id = _find_floor(session, item.floor)
            score = session.get(Score, item.score_id)
            if floor_id is None or score is None:
                unresolved += 1
            elif score.floor_explanation_id != floor_id:
                score.floor_explanation_id = floor_id
                summary.updated += not item.new
    return unresolved
