"""The JSON API under ``/api/``, in field names close to Neuronpedia's.

``GET /api/search?q=…`` and ``GET /api/feature/{sae}/{index}`` answer what the search and
feature pages show. Neuronpedia's names are used where they exist (``modelId``, ``layer``,
``index`` as a string, ``description``, ``explanationModelName``, ``typeName``,
``frac_nonzero``, ``maxActApprox``, ``freq_hist_data_bar_*``, ``activations`` with ``tokens``
and ``values``); autolabel's additions (verdicts, floors, nulls, CIs, splits, flags) are
camelCase beside them. NaN and infinities become null.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from autolabel.search import SearchHit, search
from autolabel.serve.neighbours import Neighbour, nearest_labels
from autolabel.serve.state import SearchParams, ServeState, feature_url
from autolabel.store.audits import collected_indices
from autolabel.store.browse import FeatureView, FlagView, ScoreView, feature_view, features_by_id
from autolabel.store.labels import Label

router = APIRouter(prefix="/api", tags=["api"])


def finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    return None if value is None or not math.isfinite(value) else float(value)


def label_json(label: Label) -> dict[str, Any]:
    """A feature's label: text, verdict, test score with its floor, null and CI."""
    return {"description": label.text, "explanationId": label.explanation_id,
            "typeName": label.explainer, "explanationModelName": label.llm_model,
            "verdict": label.verdict, "scorer": label.scorer, "simulator": label.simulator,
            "score": finite(label.score), "floor": finite(label.floor),
            "nullP95": finite(label.null_p95), "ciLow": finite(label.ci_low),
            "ciHigh": finite(label.ci_high), "selectedOn": label.selected_on}


def hit_json(hit: SearchHit) -> dict[str, Any]:
    """One search result."""
    return {"modelId": hit.model_id, "layer": hit.sae, "index": str(hit.index),
            "layerNumber": hit.layer, "feature": hit.feature,
            "description": hit.explanation, "explanationId": hit.explanation_id,
            "explanationModelName": hit.llm_model, "typeName": hit.explainer,
            "label": hit.label, "verdict": hit.verdict, "score": finite(hit.score),
            "floor": finite(hit.floor), "nullP95": finite(hit.null_p95),
            "ciLow": finite(hit.ci_low), "ciHigh": finite(hit.ci_high),
            "selectedOn": hit.selected_on, "frac_nonzero": finite(hit.density),
            "rank": hit.rank, "rankScore": finite(hit.rank_score), "mode": hit.mode,
            "url": feature_url(hit.sae, hit.index)}


def run_search(state: ServeState, params: SearchParams) -> list[SearchHit]:
    """The library search with the server's warm embedder."""
    return search(state.database, params.q, mode=params.mode, filters=params.filters,
                  limit=params.limit, embedder=state.embedder)


def _score_json(s: ScoreView) -> dict[str, Any]:
    return {"scorer": s.scorer, "simulator": s.simulator, "value": finite(s.value),
            "floor": finite(s.floor), "validationValue": finite(s.validation),
            "nullP95": finite(s.null_p95), "ciLow": finite(s.ci_low),
            "ciHigh": finite(s.ci_high), "verdict": s.verdict, "status": s.status,
            "nExamples": s.n}


def _flag_json(f: FlagView) -> dict[str, Any]:
    return {"auditId": f.audit_id, "category": f.category, "tier": f.tier,
            "severity": f.severity, "effectSize": finite(f.effect_size),
            "ciLow": finite(f.ci_low), "ciHigh": finite(f.ci_high),
            "qValue": finite(f.q_value), "direction": f.direction, "evidence": f.evidence}


def feature_json(view: FeatureView, decode: Any, neighbours: dict[str, list[dict[str, Any]]]
                 ) -> dict[str, Any]:
    """Neuronpedia-style feature JSON (plus label, verdicts, flags and neighbours)."""
    sae, f = view.sae, view.feature
    hist = f.histogram or {}
    edges = [float(e) for e in hist.get("edges", [])]
    return {
        "modelId": view.model_id or sae.model_id, "layer": sae.name, "index": str(f.index),
        "layerNumber": sae.layer, "hookName": sae.hook_name, "saeName": sae.name,
        "feature": f"{sae.name}:{f.index}", "frac_nonzero": finite(f.density),
        "maxActApprox": finite(f.max_activation), "meanActivation": finite(f.mean_activation),
        "nTokens": f.n_tokens,
        "freq_hist_data_bar_heights": list(hist.get("counts", [])),
        "freq_hist_data_bar_values": [(a + b) / 2 for a, b in zip(edges, edges[1:],
                                                                   strict=False)],
        "label": label_json(view.label),
        "explanations": [{"id": e.id, "description": e.text, "explanationModelName":
                          e.llm_model, "typeName": e.explainer, "status": e.status,
                          "isBest": e.is_best, "candidate": e.candidate, "error": e.error,
                          "scores": [_score_json(s) for s in e.scores]}
                         for e in view.explanations],
        "activations": [_activation_json(e, decode) for e in view.examples],
        "flags": [_flag_json(fl) for fl in view.flags],
        "neighbours": neighbours,
    }


def _activation_json(example: Any, decode: Any) -> dict[str, Any]:
    ids = [int(i) for i in example.token_ids.tolist()]
    values = [round(float(a), 5) for a in example.activations.tolist()]
    return {"tokens": decode(ids) if decode else [f"<{i}>" for i in ids], "tokenIds": ids,
            "values": values, "maxValue": finite(example.max_activation),
            "maxValueTokenIndex": int(max(range(len(values)), key=values.__getitem__))
            if values else 0, "split": example.split, "kind": example.kind,
            "bin": example.bin, "documentId": example.document_id}


def neighbour_links(state: ServeState, view: FeatureView) -> dict[str, list[dict[str, Any]]]:
    """Nearest decoder directions and nearest labels, as links with cosines."""
    with Session(state.database.engine) as session:
        collected = collected_indices(session, view.sae.id)
    decoder = state.decoders.nearest(view.sae.path, int(view.feature.index), collected)
    try:
        labels: list[Neighbour] = nearest_labels(state.database, state.embedder.name,
                                                 view.label_vector, view.feature.id)
    except Exception:  # no vectors (not embedded), or any index problem: no label links
        labels = []
    with Session(state.database.engine) as session:
        where = features_by_id(session, [n.feature_id for n in labels if n.feature_id])
    return {
        "decoder": [{"feature": f"{view.sae.name}:{n.index}", "index": n.index,
                     "cosine": round(n.cosine, 4),
                     "url": feature_url(view.sae.name, n.index)} for n in decoder],
        "labels": [{"feature": f"{where[n.feature_id][0]}:{where[n.feature_id][1]}",
                    "index": where[n.feature_id][1], "cosine": round(n.cosine, 4),
                    "url": feature_url(*where[n.feature_id])}
                   for n in labels if n.feature_id in where],
    }


def load_feature(state: ServeState, sae: str, index: int) -> tuple[FeatureView, Any]:
    """A feature's view and its token decoder."""
    with Session(state.database.engine) as session:
        view = feature_view(session, f"{sae}:{index}", state.scorer, state.embedder.name)
    return view, state.decoder(view.model_id or view.sae.model_id)


@router.get("/search", summary="Search features by their explanations")
def api_search(request: Request) -> dict[str, Any]:
    """``q`` (required), ``mode`` (hybrid|keyword|semantic), ``sae``, ``layer``,
    ``min_score``, ``scorer``, ``explainer``, ``flagged``, ``verdict`` (comma-separated, or
    ``all``; default: all but rejected), ``limit`` (1-100, default 20)."""
    state: ServeState = request.app.state.serve
    params = SearchParams.parse(dict(request.query_params), state.scorer)
    hits = run_search(state, params)
    return {"query": params.q, "mode": params.mode, "count": len(hits),
            "results": [hit_json(h) for h in hits]}


@router.get("/feature/{sae:path}/{index}", summary="One feature, Neuronpedia-style")
def api_feature(request: Request, sae: str, index: int) -> dict[str, Any]:
    """Statistics, histogram, label with verdict, every explanation with its scores, context
    windows (tokens and activations), audit flags and neighbouring features."""
    state: ServeState = request.app.state.serve
    view, decode = load_feature(state, sae, index)
    return feature_json(view, decode, neighbour_links(state, view))
