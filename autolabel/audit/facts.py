"""The audit's report data: every fact the HTML template renders, as JSON-ready data.

``report.json`` is exactly :func:`build_facts`'s result, so a reviewer (or a later tool) reads
the same numbers the HTML shows. Facts come from two records (:mod:`~autolabel.audit.plan`):
the plan (what was audited, decided from the database before any model loads) and the outcome
(what the forward passes and statistics found, with the models that produced it); the flagged
feature cards come from :mod:`~autolabel.audit.cards`.
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

import numpy as np

from autolabel import __version__
from autolabel.audit.cards import build_cards
from autolabel.audit.documents import database_key
from autolabel.audit.evaluate import CategoryResult, Evaluation, Thresholds
from autolabel.audit.flags import SEVERITY_ORDER
from autolabel.audit.pairs import Pair
from autolabel.audit.plan import EVIDENCE_VERDICTS, SEVERITY_ACTIONS, AuditOutcome, AuditPlan
from autolabel.audit.replication import CAPPED
from autolabel.audit.stats import json_safe, p95_abs
from autolabel.audit.taxonomy import Taxonomy
from autolabel.db import redact
from autolabel.selection import range_spec
from autolabel.store.audits import AuditIds

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
    "Pairs whose differing words do not name the category's two poles (e.g. two first names "
    "the taxonomy does not list, or two minority groups) cannot be oriented and are left out "
    "of tiers 2 and 3; their count is reported per category.",
]


def build_facts(plan: AuditPlan, out: AuditOutcome, ids: AuditIds, doc_id: str,
                database_url: str, seconds: float) -> dict[str, Any]:
    """Everything the report shows, as JSON-ready data (report.json is exactly this)."""
    now = datetime.now(timezone.utc)
    facts = {
        "document": {"id": doc_id, "audit_id": ids.audit_id, "run_id": ids.run_id,
                     "version": "1.1", "date": now.strftime("%Y-%m-%d %H:%M UTC"),
                     "tool_version": __version__, "config_hash": plan.config_hash,
                     "audit_key": plan.key, "database": redact(database_url),
                     "database_key": database_key(database_url), "sae": plan.sae.name},
        "summary": _summary(plan, out, seconds),
        "system": _system(plan, out),
        "crosswalk": [dict(zip(("framework", "clause", "requirement", "evidence"), c,
                               strict=True)) for c in CROSSWALK],
        "taxonomy": _taxonomy_facts(plan.taxonomy),
        "data": {"sources": [asdict(s) for s in plan.sources], "n_pairs": len(plan.pairs),
                 "examples": _example_pairs(plan.pairs)},
        "labels": label_summary(plan.labels),
        "methodology": {**_methodology(plan.thresholds), "scoring": _scoring_method(plan.labels)},
        "results": _results(plan, out.evaluation),
        "flags": build_cards(plan, out),
        "limitations": LIMITATIONS,
        "reproducibility": _repro(plan, ids),
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
    tier2 = [f for f in flags if f["tier"] == 2]
    reps = Counter((f.get("replication") or {}).get("status", "n/a") for f in tier2)
    return {"n_features": int(plan.feats.size), "n_pairs": len(plan.pairs),
            "n_labelled": len(plan.labels), "n_flags": len(flags),
            "flagged_features": len(worst), "by_tier": by_tier, "by_severity": by_sev,
            "tier2_replication": dict(reps),
            "template_specific": sum(1 for f in tier2 if f["template_specific"]),
            "labels": label_summary(plan.labels)["counts"],
            "categories_tested": [r.category for r in out.evaluation.results],
            "seconds": round(seconds, 1), "timings": out.timings,
            "clean": not any(f["tier"] >= 2 for f in flags)}


def label_summary(labels: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """How many labels tier 1 could use (trusted or weak) and how many it could not."""
    verdicts = Counter(str(v.get("verdict")) for v in labels.values())
    used = sum(1 for v in labels.values() if v.get("verdict") in EVIDENCE_VERDICTS
               and v.get("text"))
    return {"counts": {"labelled": len(labels), "used_for_tier1": used,
                       "not_trusted": len(labels) - used, "by_verdict": dict(verdicts)},
            "rule": "Tier 1 reads only labels whose verdict is trusted or weak; at_floor, "
                    "unscored and rejected labels are shown with their verdict but are never "
                    "evidence (a rejected candidate's text is never shown as a label)."}


def _system(plan: AuditPlan, out: AuditOutcome) -> dict[str, Any]:
    """Model, SAE and labelling LLM under audit."""
    llms = sorted({(v.get("llm_model") or "-", v.get("explainer") or "-",
                    v.get("prompt_hash") or "-") for v in plan.labels.values() if v.get("id")})
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
    """Categories with descriptions, lexicon sizes and the poles that orient their pairs."""
    return {"version": tax.version, "sha256": tax.sha256, "source": tax.source,
            "stoplist_size": len(tax.stoplist), "stoplist_sample": list(tax.stoplist[:12]),
            "categories": [{"name": c.name, "label": c.label, "description": c.description,
                            "n_terms": len(c.lexicon), "sample": list(c.lexicon[:10]),
                            "poles": [{"name": p.name, "n_terms": len(p.terms),
                                       "sample": list(p.terms[:6])} for p in c.poles or ()]}
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
    sims = sorted({str(lab["simulator"]) for lab in labels.values() if lab.get("simulator")})
    if not sims:
        return "No explanation scores were available for the audited features."
    return ("Explanation scores are simulation scores (Pearson r pooled over held-out test "
            f"tokens) from: {', '.join(sims)}. Each label is shown with its test score, the "
            "floor (the same scorer on another feature's explanation), the null's 95th "
            "percentile, its bootstrap CI and the verdict (trusted / weak / at floor / "
            "rejected / unscored) that decides whether tier 1 may use it.")


def _methodology(th: Thresholds) -> dict[str, Any]:
    """Methods and thresholds, in words and numbers."""
    return {
        "thresholds": asdict(th),
        "span_statistic": "For each sentence, the feature's maximum activation over the tokens "
                          "whose character range overlaps the words that differ from the other "
                          "sentence (aligned word by word, so words both sides share between "
                          "two swaps are not read; character offsets, so terms of different "
                          "token lengths compare term with term).",
        "orientation": "Each pair is oriented by demographic group, never by the order a file "
                       "lists its sentences: the differing words of each side are matched "
                       "against the category's two poles (e.g. female / male terms; pole a is "
                       "the historically disadvantaged or marked group). Paired difference = "
                       "pole-a sentence minus pole-b sentence, so d_z > 0 means higher on pole "
                       "a. Pairs whose words name the same pole, both poles or neither are "
                       "left out of tiers 2 and 3 and counted as unoriented.",
        "tier1": f"Label matches a category's lexicon (whole words, stop-list phrases removed) "
                 f"or its description by cosine similarity >= {th.embed:.2f} (all-MiniLM-L6-v2;"
                 " calibrated: related labels 0.317-0.686, unrelated 0.030-0.273). Only labels "
                 "whose verdict is trusted or weak are read.",
        "tier2": f"Paired t-test (two-sided) and Wilcoxon signed-rank test per feature on the "
                 f"oriented differences; effect size d_z = mean(diff)/sd(diff); 95% percentile "
                 f"bootstrap CI of d_z ({th.n_boot} resamples of pairs, seed {th.seed}); "
                 f"Benjamini-Hochberg q over all audited features within the category. Flag "
                 f"when q < {th.q}, |d_z| >= {th.effect} and specificity (mean |diff| on the "
                 f"category / the largest mean |diff| over the neutral word pairs) >= "
                 f"{th.specificity}.",
        "tier3": f"Among oriented pairs with a known stereotype direction, the oriented "
                 f"difference where the pole-a sentence is the stereotype-consistent one is "
                 f"compared with the pairs where the pole-b sentence is (Welch t-test, Cohen's "
                 f"d, BH q per category). Flag when tier 2 holds, q < {th.q} and d >= "
                 f"{th.effect}: the feature's group difference grows when the sentence states "
                 f"the stereotype. A feature that only reads the group term has the same "
                 f"difference in both contexts and is not tier 3.",
        "replication": f"Units: each built-in template family (all pairs from one sentence "
                       f"template) and each other pair source as a whole; a unit tests a "
                       f"category when it has >= {th.min_unit_pairs} oriented pairs of it. Each "
                       f"unit's d_z is shown with its bootstrap 95% CI. A unit replicates a "
                       f"flag when its one-sided paired t-test in the direction of the pooled "
                       f"d_z, Holm-corrected over the units testing the category, gives p < "
                       f"{th.q} (so a null unit counts by chance at most {th.q} of the time, "
                       f"however many families there are). replicated: >= 2 units; "
                       f"template-specific: only one built-in family; source-specific: only one "
                       f"external source; not-replicated: no single unit; single-unit: only one "
                       f"unit tests the category. {', '.join(sorted(CAPPED))} flags are capped "
                       f"at medium severity.",
        "baselines": f"{th.n_random} random unit directions in the residual stream (seed "
                     f"{th.seed}) go through the same span statistic, orientation and tests: "
                     f"their d_z distribution and the share passing the tier-2 rule estimate "
                     f"the false positive rate. Neutral word swaps (table/chair, car/bus, ...) "
                     f"measure how much each feature moves when any word changes.",
        "severity": {"critical": "tiers 1+2+3", "high": "tier 2 with tier 1 or 3",
                     "medium": "tier 2 only, or a capped (non-replicated) tier 2",
                     "review": "tier 1 only"},
        "actions": SEVERITY_ACTIONS,
    }


def _category_facts(r: CategoryResult, ev: Evaluation) -> dict[str, Any]:
    """One category's row of the results table, with its per-source statistics."""
    n1 = sum(1 for _f, c in ev.t1 if c == r.category)
    return {"category": r.category, "n_pairs": r.n_pairs, "sources": r.sources,
            "orientation": r.orientation, "poles": list(r.poles) if r.poles else None,
            "n_oriented": r.n_oriented, "n_unoriented": r.n_unoriented,
            "tier1": n1, "tier2": int(r.tier2.sum()), "tier3": int(r.tier3.sum()),
            "n_directional": r.n_directional, "n_pole_a_stereotyped": r.n_plus,
            "n_pole_b_stereotyped": r.n_minus,
            "max_abs_dz": float(np.abs(r.stats.dz).max()) if r.stats.dz.size else 0.0,
            "random_abs_dz_p95": p95_abs(r.random_dz), "random_flag_rate": r.random_flag_rate,
            "by_source": r.per_source,
            "units": [{"unit": u.unit.name, "kind": u.unit.kind, "n_pairs": int(u.unit.rows.size),
                       "tested": u.tested} for u in r.units]}


def _results(plan: AuditPlan, ev: Evaluation) -> dict[str, Any]:
    """Heat-map counts, per-category summaries and effect-size distributions."""
    per_cat = [_category_facts(r, ev) for r in ev.results]
    ns, th = ev.neutral_stats, plan.thresholds
    best = np.max([np.abs(r.stats.dz) for r in ev.results], axis=0) if ev.results else []
    rand = np.max([np.abs(r.random_dz) for r in ev.results], axis=0) if ev.results else []
    return {"per_category": per_cat,
            "abs_dz_features": [float(x) for x in best],
            "abs_dz_random": [float(x) for x in rand],
            "neutral_control_tokens": int(((ns.q < th.q) & (np.abs(ns.dz) >= th.effect)).sum())}


def _repro(plan: AuditPlan, ids: AuditIds) -> dict[str, Any]:
    """Versions, config, command line and ids needed to reproduce the audit."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("autolabel", "torch", "transformers", "sae-lens", "numpy", "scipy", "jinja2",
                "sentence-transformers"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "not installed"
    return {"versions": versions, "config": plan.config.model_dump(mode="json"),
            "argv": plan.argv or list(sys.argv), "run_id": ids.run_id,
            "audit_id": ids.audit_id, "pairs_spec": plan.spec,
            "features": range_spec([int(f) for f in plan.feats]) if plan.feats.size else ""}
