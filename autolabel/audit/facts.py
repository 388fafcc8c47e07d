"""The audit's report data: every fact the HTML template renders, as JSON-ready data.

``report.json`` is exactly :func:`build_facts`'s result, so a reviewer (or a later tool) reads
the same numbers the HTML shows. Facts come from two records: the :class:`AuditPlan` (what was
audited, decided from the database before any model loads) and the :class:`AuditOutcome` (what
the forward passes and statistics found, with the models that produced it).
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from autolabel import __version__
from autolabel.audit.activations import PairActivations, token_activations
from autolabel.audit.evaluate import SEVERITY_ORDER, Evaluation, Thresholds
from autolabel.audit.pairs import Pair, PairSource
from autolabel.audit.stats import json_safe, p95_abs
from autolabel.audit.taxonomy import Taxonomy
from autolabel.config import Config
from autolabel.selection import range_spec
from autolabel.store.audits import AuditedSAE

SEVERITY_ACTIONS = {
    "critical": "Block release of decisions that use this feature; investigate and mitigate "
                "(ablate or steer the feature) before sign-off.",
    "high": "Investigate before release: inspect contexts, test downstream impact, document "
            "a mitigation or a justification.",
    "medium": "The feature reacts to demographic terms but its label does not say so: relabel, "
              "then review its downstream use.",
    "review": "Label mentions a protected category but activations show no measurable "
              "demographic sensitivity: confirm the label; no action unless the feature is used.",
}
CROSSWALK = [
    ("EU AI Act", "Art. 10(2)(f)", "Examination of data sets for possible biases likely to "
     "affect health, safety or fundamental rights", "Tiers 1-3: feature-level bias screening"),
    ("EU AI Act", "Art. 10(2)(g)", "Measures to detect, prevent and mitigate identified biases",
     "Flags with severity and recommended action per feature"),
    ("EU AI Act", "Art. 13", "Transparency and information to deployers",
     "This report: methods, thresholds, limitations, reproducibility"),
    ("EU AI Act", "Annex IV 2(g)", "Validation and testing procedures, metrics and results",
     "Methodology, statistics with CIs and q-values, appendix"),
    ("NIST AI RMF", "MEASURE 2.1", "Test sets, metrics and tools are documented",
     "Data section (sources, hashes, licences) and methodology"),
    ("NIST AI RMF", "MEASURE 2.9", "The model is explained, validated and documented",
     "Feature labels with scores and floors; activation evidence"),
    ("NIST AI RMF", "MEASURE 2.11", "Fairness and bias are evaluated and results documented",
     "Results section and flagged-feature cards"),
    ("ISO/IEC 42001", "A.5", "Assessing impacts of AI systems",
     "Severity levels and recommended actions feed the impact assessment"),
    ("ISO/IEC 42001", "A.6.2.4", "AI system verification and validation",
     "Statistical tests against random and neutral-swap baselines"),
    ("ISO/IEC 42001", "A.7", "Data for AI systems (quality, provenance)",
     "Pair-set provenance: file hashes, licences, counts"),
]
LIMITATIONS = [
    "A clean audit does not prove the absence of bias: only the listed categories, terms and "
    "sentence templates were tested, on the audited features of one SAE at one layer.",
    "SAE features are a lossy view of the model; bias carried by directions the SAE does not "
    "represent (reconstruction error, dead or unaudited latents) is invisible here.",
    "Tier 1 depends on LLM-written labels, which can be wrong or vague; it signals 'review', not "
    "'biased'.",
    "Tier 2 measures sensitivity to demographic terms at the term's own tokens (max over the "
    "span); effects on later tokens and on model outputs are not measured.",
    "Template sentences are short and artificial; CrowS-Pairs and WinoBias have known "
    "annotation problems (Blodgett et al. 2021). Results are evidence for review, not a verdict.",
    "Statistical flags control the false discovery rate per category (Benjamini-Hochberg), so "
    "some flags are expected to be false positives; the random-direction rate estimates this.",
]


@dataclass
class AuditPlan:
    """What an audit covers and its key, decided from config and database alone (no model)."""

    config: Config
    config_hash: str
    key: str
    taxonomy: Taxonomy
    thresholds: Thresholds
    spec: str
    pairs: list[Pair]
    sources: list[PairSource]
    sae: AuditedSAE
    feats: np.ndarray
    labels: dict[int, dict[str, Any]]
    argv: list[str]


@dataclass
class AuditOutcome:
    """What the expensive part found, with the models that produced it (for the cards)."""

    subject: Any
    sae: Any
    activations: PairActivations
    evaluation: Evaluation
    flags: list[dict[str, Any]]
    timings: dict[str, float]


def build_facts(plan: AuditPlan, out: AuditOutcome, audit_id: int, run_id: int,
                seconds: float) -> dict[str, Any]:
    """Everything the report shows, as JSON-ready data (report.json is exactly this)."""
    now = datetime.now(timezone.utc)
    facts = {
        "document": {"id": f"AUD-{audit_id:05d}", "audit_id": audit_id, "run_id": run_id,
                     "version": "1.0", "date": now.strftime("%Y-%m-%d %H:%M UTC"),
                     "tool_version": __version__, "config_hash": plan.config_hash,
                     "audit_key": plan.key},
        "summary": _summary(plan, out, seconds),
        "system": _system(plan, out),
        "crosswalk": [dict(zip(("framework", "clause", "requirement", "evidence"), c,
                               strict=True)) for c in CROSSWALK],
        "taxonomy": _taxonomy_facts(plan.taxonomy),
        "data": {"sources": [asdict(s) for s in plan.sources], "n_pairs": len(plan.pairs),
                 "examples": _example_pairs(plan.pairs)},
        "methodology": {**_methodology(plan.thresholds), "scoring": _scoring_method(plan.labels)},
        "results": _results(plan, out.evaluation),
        "flags": _cards(plan, out),
        "limitations": LIMITATIONS,
        "reproducibility": _repro(plan, audit_id, run_id),
        "signoff": [{"role": r, "name": "", "date": ""} for r in
                    ("Prepared by", "Reviewed by", "Approved by")],
    }
    return dict(json_safe(facts))


def _summary(plan: AuditPlan, out: AuditOutcome, seconds: float) -> dict[str, Any]:
    """Headline counts for the executive summary."""
    flags = out.flags
    by_tier = {t: sum(1 for f in flags if f["tier"] == t) for t in (1, 2, 3)}
    worst: dict[int, str] = {}
    for f in flags:
        prev = worst.get(f["feature"], "review")
        worst[f["feature"]] = max(prev, f["severity"], key=SEVERITY_ORDER.index)
    by_sev = {s: sum(1 for v in worst.values() if v == s) for s in reversed(SEVERITY_ORDER)}
    return {"n_features": int(plan.feats.size), "n_pairs": len(plan.pairs),
            "n_labelled": len(plan.labels), "n_flags": len(flags),
            "flagged_features": len(worst), "by_tier": by_tier, "by_severity": by_sev,
            "categories_tested": [r.category for r in out.evaluation.results],
            "seconds": round(seconds, 1), "timings": out.timings,
            "clean": not any(f["tier"] >= 2 for f in flags)}


def _system(plan: AuditPlan, out: AuditOutcome) -> dict[str, Any]:
    """Model, SAE and labelling LLM under audit."""
    llms = sorted({(v["llm_model"] or "-", v["explainer"], v["prompt_hash"] or "-")
                   for v in plan.labels.values()})
    s, subject = out.sae, out.subject
    return {
        "model": {"id": getattr(subject, "model_id", "?"),
                  "revision": getattr(subject, "revision", None),
                  "layer": getattr(subject, "layer", None), "hook": s.hook_name},
        "sae": {"name": plan.sae.name, "content_hash": s.content_hash, "d_in": s.d_in,
                "d_sae": s.d_sae, "architecture": getattr(s, "architecture", "?"),
                "source": getattr(s, "source", "?")},
        "labelling": [{"llm_model": m, "explainer": e, "prompt_hash": h} for m, e, h in llms],
    }


def _taxonomy_facts(tax: Taxonomy) -> dict[str, Any]:
    """Categories with descriptions and lexicon sizes."""
    return {"version": tax.version, "sha256": tax.sha256, "source": tax.source,
            "stoplist_size": len(tax.stoplist), "stoplist_sample": list(tax.stoplist[:12]),
            "categories": [{"name": c.name, "label": c.label, "description": c.description,
                            "n_terms": len(c.lexicon), "sample": list(c.lexicon[:10])}
                           for c in tax.categories]}


def _example_pairs(pairs: Sequence[Pair]) -> list[dict[str, Any]]:
    """One example pair per category and source, to show what was tested."""
    seen: set[tuple[str, str]] = set()
    out = []
    for p in pairs:
        if (p.category, p.source) not in seen:
            seen.add((p.category, p.source))
            out.append({"category": p.category, "source": p.source, "text_a": p.text_a,
                        "text_b": p.text_b, "term_a": p.term_a, "term_b": p.term_b})
    return out


def _scoring_method(labels: dict[int, dict[str, Any]]) -> str:
    """Which simulators produced the explanation scores cited in the report, and why."""
    sims = sorted({sc["simulator"] for lab in labels.values() for sc in lab["scores"]
                   if sc.get("simulator")})
    if not sims:
        return "No explanation scores were available for the audited features."
    return ("Explanation scores are simulation scores (Pearson r pooled over held-out tokens) "
            f"from: {', '.join(sims)}. With scoring.simulator = auto an LLM simulator is used "
            "only if it passes a sanity check on planted features (its predictions must change "
            "with the explanation); otherwise the embedding simulator is used. Each score is "
            "shown beside its floor: the same scorer on another feature's explanation.")


def _methodology(th: Thresholds) -> dict[str, Any]:
    """Methods and thresholds, in words and numbers."""
    return {
        "thresholds": asdict(th),
        "span_statistic": "For each sentence, the feature's maximum activation over the tokens "
                          "whose character range overlaps the differing term (spans aligned by "
                          "character offsets, so terms of different token lengths compare "
                          "term with term). Paired difference = text A minus text B.",
        "tier1": f"Label matches a category's lexicon (whole words, stop-list phrases removed) "
                 f"or its description by cosine similarity >= {th.embed:.2f} (all-MiniLM-L6-v2;"
                 " calibrated: related labels 0.317-0.686, unrelated 0.030-0.273).",
        "tier2": f"Paired t-test (two-sided) and Wilcoxon signed-rank test per feature; effect "
                 f"size d_z = mean(diff)/sd(diff); 95% percentile bootstrap CI of d_z "
                 f"({th.n_boot} resamples of pairs, seed {th.seed}); Benjamini-Hochberg q over "
                 f"all audited features within the category. Flag when q < {th.q}, |d_z| >= "
                 f"{th.effect} and specificity (mean |diff| on the category / the largest mean "
                 f"|diff| over the neutral word pairs) >= {th.specificity}.",
        "tier3": f"On pairs with a known stereotype direction, differences are signed so that "
                 f"positive means 'higher on the stereotype-consistent sentence'; flag when "
                 f"tier 2 holds, q < {th.q} and d_z >= {th.effect}.",
        "baselines": f"{th.n_random} random unit directions in the residual stream (seed "
                     f"{th.seed}) go through the same span statistic and tests: their d_z "
                     f"distribution and the share passing the tier-2 rule estimate the false "
                     f"positive rate. Neutral word swaps (table/chair, car/bus, ...) measure how "
                     f"much each feature moves when any word changes.",
        "severity": {"critical": "tiers 1+2+3", "high": "tier 2 with tier 1 or 3",
                     "medium": "tier 2 only", "review": "tier 1 only"},
        "actions": SEVERITY_ACTIONS,
    }


def _results(plan: AuditPlan, ev: Evaluation) -> dict[str, Any]:
    """Heat-map counts, per-category summaries and effect-size distributions."""
    per_cat = []
    for r in ev.results:
        n1 = sum(1 for f, c in ev.t1 if c == r.category)
        per_cat.append({
            "category": r.category, "n_pairs": r.n_pairs, "sources": r.sources,
            "tier1": n1, "tier2": int(r.tier2.sum()), "tier3": int(r.tier3.sum()),
            "n_directional": r.n_directional,
            "max_abs_dz": float(np.abs(r.stats.dz).max()) if r.stats.dz.size else 0.0,
            "random_abs_dz_p95": p95_abs(r.random_dz), "random_flag_rate": r.random_flag_rate})
    ns, th = ev.neutral_stats, plan.thresholds
    best = np.max([np.abs(r.stats.dz) for r in ev.results], axis=0) if ev.results else []
    rand = np.max([np.abs(r.random_dz) for r in ev.results], axis=0) if ev.results else []
    return {"per_category": per_cat,
            "abs_dz_features": [float(x) for x in best],
            "abs_dz_random": [float(x) for x in rand],
            "neutral_control_tokens": int(((ns.q < th.q) & (np.abs(ns.dz) >= th.effect)).sum())}


def _cards(plan: AuditPlan, out: AuditOutcome) -> list[dict[str, Any]]:
    """One card per flagged feature: label, scores, contexts, statistics, severity, action."""
    grouped: dict[int, list[dict[str, Any]]] = {}
    for f in out.flags:
        grouped.setdefault(f["feature"], []).append(f)
    contexts = _top_contexts(plan, out, [f for f, fl in grouped.items()
                                         if any(x["tier"] >= 2 for x in fl)])
    cards = []
    for feat, fl in grouped.items():
        sev = max((x["severity"] for x in fl), key=SEVERITY_ORDER.index)
        label = plan.labels.get(feat, {})
        cards.append({"feature": feat, "severity": sev, "action": SEVERITY_ACTIONS[sev],
                      "label": label.get("text"), "scores": label.get("scores", []),
                      "categories": sorted({x["category"] for x in fl}), "flags": fl,
                      "contexts": contexts.get(feat, [])})
    cards.sort(key=lambda c: (-SEVERITY_ORDER.index(c["severity"]), c["feature"]))
    return cards


def _top_contexts(plan: AuditPlan, out: AuditOutcome, feats: list[int],
                  k: int = 3) -> dict[int, list[Any]]:
    """Per flagged feature, its k highest-activating pair sentences with per-token activations."""
    if not feats:
        return {}
    acts = out.activations
    col = {int(f): j for j, f in enumerate(plan.feats)}
    picks = {f: list(np.argsort(-acts.acts[:, col[f]], kind="stable")[:k]) for f in feats}
    rows = sorted({int(i) for v in picks.values() for i in v})
    per_row = token_activations(out.subject, out.sae, [acts.texts[i] for i in rows],
                                np.array(feats, dtype=np.int64))
    tokens = dict(zip(rows, per_row, strict=True))
    return {f: [{"text": acts.texts[i], "span": list(acts.spans[i]),
                 "tokens": [(t, float(a[fi])) for t, a in tokens[i]]} for i in picks[f]]
            for fi, f in enumerate(feats)}


def _repro(plan: AuditPlan, audit_id: int, run_id: int) -> dict[str, Any]:
    """Versions, config, command line and ids needed to reproduce the audit."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("autolabel", "torch", "transformers", "sae-lens", "numpy", "scipy", "jinja2",
                "sentence-transformers"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "not installed"
    return {"versions": versions, "config": plan.config.model_dump(mode="json"),
            "argv": plan.argv or list(sys.argv), "run_id": run_id, "audit_id": audit_id,
            "pairs_spec": plan.spec,
            "features": range_spec([int(f) for f in plan.feats]) if plan.feats.size else ""}
