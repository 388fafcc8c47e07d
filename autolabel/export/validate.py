"""Validating one JSONL line's record before anything of it is written (no partial features).

Types come from the store's field specs (:mod:`autolabel.store.records`); unknown extra fields
are ignored, so a newer exporter's additions do not break an older importer. Every problem is a
ValueError naming the place (``examples[3].split``), for the caller to prefix with the line.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from autolabel.store.records import (
    COLLECTION_FIELDS,
    EMBEDDING_FIELDS,
    EXAMPLE_FIELDS,
    EXPLANATION_FIELDS,
    FEATURE_FIELDS,
    FLOOR_FIELDS,
    FORMAT_TAG,
    SAE_FIELDS,
    SCORE_FIELDS,
    SCORE_TRUST_FIELDS,
    FieldSpec,
)

_S, _D, _L = (str,), (dict,), (list,)
_OS, _OD = (str, None), (dict, None)
Enums = dict[str, tuple[str, ...]]
EXAMPLE_ENUMS: Enums = {"split": ("train", "validation", "test"),
                        "kind": ("top", "quantile", "random")}
EXPLANATION_ENUMS: Enums = {"status": ("ok", "parse_error", "refused", "error", "rejected")}
VERDICTS = ("trusted", "weak", "at_floor", "unscored")  # what a score row can carry
COLLECTION_ENUMS: Enums = {"status": ("running", "ok", "failed")}


def check(obj: Any, fields: FieldSpec, where: str, enums: Enums | None = None) -> None:
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


def check_record(rec: Any) -> None:
    """Validate a whole record before anything is written (no partial features)."""
    tag = rec.get("format") if isinstance(rec, dict) else None
    if tag != FORMAT_TAG:
        raise ValueError(f"format is {tag!r}, expected {FORMAT_TAG!r}")
    check(rec, {"sae": _D, "collections": _L, "feature": _D, "examples": _L,
                "explanations": _L}, "line")
    check(rec["sae"], SAE_FIELDS, "sae")
    keys = set()
    for coll in rec["collections"]:
        check(coll, COLLECTION_FIELDS, "collection", COLLECTION_ENUMS)
        keys.add(coll["key"])
    check(rec["feature"], {**FEATURE_FIELDS, "collection": _OS}, "feature")
    if rec["feature"]["collection"] not in keys | {None}:
        raise ValueError("feature.collection names no collection of the line")
    for i, ex in enumerate(rec["examples"]):
        _check_example(ex, f"examples[{i}]", keys)
    for i, expl in enumerate(rec["explanations"]):
        _check_explanation(expl, f"explanations[{i}]")


def _check_example(ex: Any, where: str, keys: set[str]) -> None:
    """An example: known collection, enums, and blobs that decode to equal-length arrays."""
    check(ex, {**EXAMPLE_FIELDS, "collection": _S, "token_ids": _S, "activations": _S},
          where, EXAMPLE_ENUMS)
    if ex["collection"] not in keys:
        raise ValueError(f"{where}.collection names no collection of the line")
    ids, acts = _unb64(ex["token_ids"], where), _unb64(ex["activations"], where)
    if len(ids) % 4 or len(ids) != len(acts):
        raise ValueError(f"{where}: token_ids and activations differ in length")


def _check_explanation(expl: Any, where: str) -> None:
    """An explanation, its scores (and floor references) and its embeddings."""
    check(expl, {**EXPLANATION_FIELDS, "scores": _L, "embeddings": _L}, where,
          EXPLANATION_ENUMS)
    for j, score in enumerate(expl["scores"]):
        check(score, {**SCORE_FIELDS, "floor_explanation": _OD}, f"{where}.scores[{j}]")
        _check_trust(score, f"{where}.scores[{j}]")
        if score["floor_explanation"] is not None:
            check(score["floor_explanation"], FLOOR_FIELDS, f"{where}.scores[{j}].floor")
    for j, emb in enumerate(expl["embeddings"]):
        check(emb, {**EMBEDDING_FIELDS, "vector": _S}, f"{where}.embeddings[{j}]")
        if len(_unb64(emb["vector"], where)) != 4 * emb["dim"]:
            raise ValueError(f"{where}.embeddings[{j}]: vector length is not dim float32s")


def _check_trust(score: dict[str, Any], where: str) -> None:
    """The trust columns a score may carry (absent in files made before them)."""
    present = {k: v for k, v in SCORE_TRUST_FIELDS.items() if k in score}
    check(score, present, where)
    if score.get("verdict") not in (*VERDICTS, None):
        raise ValueError(f"{where}.verdict is {score['verdict']!r}, not one of "
                         f"{', '.join(VERDICTS)}")


def _unb64(text: str, where: str) -> bytes:
    """Strict base64 decoding (ValueError naming the place on bad input)."""
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError(f"{where}: invalid base64 blob") from None
