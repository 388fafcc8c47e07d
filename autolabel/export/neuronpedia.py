"""Records to Neuronpedia's feature JSON: a directory of feature files or one JSON list.

Token ids are decoded with the tokenizer of the model the feature's examples were collected
with (loaded once per model per export); NaN and infinities become null (JSON has neither).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from autolabel.db import unpack_array
from autolabel.errors import InputError
from autolabel.examples import TokenDecoder
from autolabel.export.writers import output
from autolabel.store.collections import ACT_DTYPE, TOKEN_DTYPE

INDEX_HEAD = ("modelId", "layer", "saeName", "saeHash", "hookName")
TokenizerLoader = Callable[[str], Any]  # model id -> tokenizer


def write_neuronpedia(records: Iterator[dict[str, Any]], out: Path | None,
                      load_tokenizer: TokenizerLoader) -> None:
    """A directory of per-feature files plus index.json, or one JSON list (``.json``/stdout)."""
    decoders: dict[str, TokenDecoder] = {}
    items = (neuronpedia_feature(r, _decoder(r, decoders, load_tokenizer)) for r in records)
    if out is not None and out.suffix.lower() != ".json":
        _write_directory(items, out)
        return
    with output(out) as fh:
        fh.write("[")
        for i, item in enumerate(items):
            fh.write(("," if i else "") + "\n" + json.dumps(item, ensure_ascii=False))
        fh.write("\n]\n")


def _write_directory(items: Iterator[dict[str, Any]], out: Path) -> None:
    """``<index>.json`` per feature and ``index.json`` (SAE identity, one line per feature)."""
    listing: list[dict[str, Any]] = []
    head: dict[str, Any] = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for item in items:
            name = f"{item['index']}.json"
            (out / name).write_text(json.dumps(item, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
            head = {k: item[k] for k in INDEX_HEAD}
            listing.append(_listing_entry(item, name))
        index = {"format": "autolabel.neuronpedia/1", **head, "features": listing}
        (out / "index.json").write_text(json.dumps(index, ensure_ascii=False, indent=1) + "\n",
                                        encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {out} ({exc.strerror}); choose a writable --out "
                         "directory") from None


def _listing_entry(item: dict[str, Any], name: str) -> dict[str, Any]:
    """A feature's line in index.json: its file, best description and headline statistics."""
    best = next((e for e in item["explanations"] if e["isBest"]), None)
    label = item.get("label") or {}
    return {"index": item["index"], "file": name,
            "description": (label["description"] if label else
                            best["description"] if best else None),
            "verdict": label.get("verdict"), "selectedOn": label.get("selectedOn"),
            "frac_nonzero": item["frac_nonzero"], "maxActApprox": item["maxActApprox"]}


def _decoder(record: dict[str, Any], cache: dict[str, TokenDecoder],
             load_tokenizer: TokenizerLoader) -> TokenDecoder | None:
    """The memoised token decoder of the model the feature's examples were collected with."""
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
        "explanations": [_explanation(e) for e in record["explanations"]],
        "label": _label(record.get("label")),
        "activations": [_activation(e, decode) for e in sorted(examples, key=_order)],
    }


def _label(label: dict[str, Any] | None) -> dict[str, Any] | None:
    """The feature's label (chosen on validation, scored on test) with its verdict."""
    if label is None:
        return None
    return {"description": label["text"], "typeName": label["explainer"],
            "explanationModelName": label["llm_model"], "scorer": label["scorer"],
            "simulator": label["simulator"], "value": _finite(label["score"]),
            "floor": _finite(label["floor"]), "nullP95": _finite(label["null_p95"]),
            "ciLow": _finite(label["ci_low"]), "ciHigh": _finite(label["ci_high"]),
            "verdict": label["verdict"], "selectedOn": label["selected_on"]}


def _histogram_bars(histogram: dict[str, Any] | None) -> tuple[list[Any], list[float]]:
    """Bar heights and bar centres (Neuronpedia's form) from stored counts and edges."""
    if not histogram or "counts" not in histogram or "edges" not in histogram:
        return [], []
    edges = [float(e) for e in histogram["edges"]]
    return list(histogram["counts"]), [(a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)]


def _order(example: dict[str, Any]) -> tuple[int, int, float, str, int]:
    """Top examples first, then quantile bins (high to low), then random; strongest first."""
    kind = ("top", "quantile", "random").index(example["kind"])
    return (kind, -(example["bin"] or 0), -example["max_activation"], example["split"],
            example["rank"])


def _explanation(expl: dict[str, Any]) -> dict[str, Any]:
    """An explanation in Neuronpedia's field names, with autolabel's status and floors."""
    return {
        "description": expl["text"], "explanationModelName": expl["llm_model"],
        "typeName": expl["explainer"], "status": expl["status"], "isBest": expl["is_best"],
        "candidate": expl["candidate"],
        "scores": [{"scorer": s["scorer"], "simulator": s["simulator"],
                    "value": _finite(s["value"]), "floor": _finite(s["floor_value"]),
                    "nExamples": s["n_examples"], "status": s["status"],
                    "validationValue": _finite(s.get("validation_value")),
                    "nullMean": _finite(s.get("null_mean")),
                    "nullP95": _finite(s.get("null_p95")), "nullN": s.get("null_n"),
                    "ciLow": _finite(s.get("ci_low")), "ciHigh": _finite(s.get("ci_high")),
                    "verdict": ("rejected" if expl["status"] == "rejected"
                                else s.get("verdict") or "unscored")}
                   for s in expl["scores"]],
    }


def _activation(example: dict[str, Any], decode: TokenDecoder | None) -> dict[str, Any]:
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
