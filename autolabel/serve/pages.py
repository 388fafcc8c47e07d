"""The HTML pages: what each template is given. Reads go through :mod:`autolabel.store.browse`
and the search library; rendering through :mod:`autolabel.serve.render`."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from sqlalchemy.orm import Session

from autolabel import __version__
from autolabel.errors import NotFoundError
from autolabel.search import DEFAULT_VERDICTS, MODES
from autolabel.serve.api import load_feature, neighbour_links, run_search
from autolabel.serve.render import histogram_bars, sections, value_histogram
from autolabel.serve.state import SearchParams, ServeState, feature_url, sae_url
from autolabel.store.browse import audit_list, audit_view, sae_list, sae_overview
from autolabel.store.labels import VERDICTS


def render(state: ServeState, template: str, **context: Any) -> str:
    """One page, with what every page shows (navigation, version)."""
    return state.env.get_template(template).render(
        version=__version__, feature_url=feature_url, sae_url=sae_url, **context)


def search_page(state: ServeState, params: SearchParams, raw: dict[str, str]) -> str:
    """The search form; results when there is a query."""
    hits = run_search(state, params) if params.q else []
    with Session(state.database.engine) as session:
        saes = sae_list(session)
    return render(state, "search.html.j2", title="Search", params=params, hits=hits,
                  form={k: raw.get(k, "") for k in ("q", "mode", "sae", "layer", "min_score",
                                                    "scorer", "explainer", "flagged",
                                                    "verdict", "limit")},
                  modes=MODES, verdicts=VERDICTS, default_verdicts=DEFAULT_VERDICTS, saes=saes)


def feature_page(state: ServeState, sae: str, index: int) -> str:
    """Statistics, histogram, contexts, labels with scores, flags and neighbours."""
    view, decode = load_feature(state, sae, index)
    f = view.feature
    hist = f.histogram or {}
    scale = float(f.max_activation or 0.0) or max(
        (e.max_activation for e in view.examples), default=0.0)
    return render(
        state, "feature.html.j2", title=f"{view.sae.name}:{f.index}", view=view,
        bars=histogram_bars(hist.get("counts", []), hist.get("edges")),
        edges=hist.get("edges", []), sections=sections(view.examples, decode or _ids, scale),
        decoded=decode is not None, neighbours=neighbour_links(state, view))


def _ids(ids: list[int]) -> list[str]:
    """Token ids as text when the tokenizer could not be loaded."""
    return [f"<{i}>" for i in ids]


def sae_page(state: ServeState, name: str) -> str:
    """Score distributions, the share of trusted labels, every feature with its label."""
    with Session(state.database.engine) as session:
        overview = sae_overview(session, name, state.scorer)
    labels = list(overview.labels.values())
    verdicts = Counter(lab.verdict for lab in labels)
    by_explainer: dict[str, Counter[str]] = {}
    for lab in labels:
        by_explainer.setdefault(lab.explainer or "(none)", Counter())[lab.verdict] += 1
    scores = [lab.score for lab in labels if lab.score is not None]
    floors = [lab.floor for lab in labels if lab.floor is not None]
    score_bars, edges = value_histogram(scores)
    floor_bars, _ = value_histogram(floors)
    return render(state, "sae.html.j2", title=f"SAE {overview.sae.name}", overview=overview,
                  verdicts=verdicts, verdict_names=VERDICTS, by_explainer=by_explainer,
                  trusted_share=(verdicts["trusted"] / len(labels)) if labels else None,
                  score_bars=score_bars, floor_bars=floor_bars, edges=edges,
                  mean_score=_mean(scores), mean_floor=_mean(floors))


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def audits_page(state: ServeState) -> str:
    """Every audit with its SAE, status and flag count."""
    with Session(state.database.engine) as session:
        audits = audit_list(session)
    return render(state, "audits.html.j2", title="Audits", audits=audits)


def audit_page(state: ServeState, audit_id: int) -> str:
    """One audit's flags, linked to their features."""
    with Session(state.database.engine) as session:
        view = audit_view(session, audit_id)
    if view is None:
        raise NotFoundError(f"no audit with id {audit_id}; see /audits for the list")
    return render(state, "audit.html.j2", title=f"Audit {audit_id}", view=view)


def api_page(state: ServeState, schema: dict[str, Any]) -> str:
    """The API's endpoints and parameters, from the OpenAPI schema (no CDN-hosted UI)."""
    endpoints = [(path, method.upper(), op.get("summary", ""), op.get("description", ""),
                  [p["name"] for p in op.get("parameters", [])])
                 for path, item in sorted(schema.get("paths", {}).items())
                 for method, op in item.items()]
    return render(state, "api.html.j2", title="JSON API", endpoints=endpoints)
