"""Bias audit: taxonomy, three tiers of evidence per SAE feature, flags, and the audit report.

Three tiers, each weaker alone than together, because a compliance reviewer must be able to tell
"the label mentions women" from "the feature measurably reacts to women":

1. **Label evidence** (:mod:`~autolabel.audit.taxonomy`) — the feature's explanation matches a
   bias category by lexicon or by embedding similarity to the category description. Alone this
   means "review", never "biased".
2. **Activation evidence** (:mod:`~autolabel.audit.activations`, :mod:`~autolabel.audit.stats`,
   :mod:`~autolabel.audit.evaluate`) — counterfactual sentence pairs (:mod:`~autolabel.audit.pairs`)
   differing only in a demographic term go through model + SAE; the per-pair span maxima are
   tested per feature against random directions and neutral word swaps.
3. **Direction** — on pairs with a known stereotype direction the feature fires more on the
   stereotype-consistent sentence. Only assessed where tier 2 holds.

:mod:`~autolabel.audit.run` orchestrates (and skips an identical finished audit before loading
anything); :mod:`~autolabel.audit.facts` builds the report data that
:mod:`~autolabel.audit.report` renders.
"""

from __future__ import annotations

from autolabel.audit.activations import (
    PairActivations,
    pair_activations,
    span_max,
    span_token_mask,
    token_activations,
)
from autolabel.audit.evaluate import (
    SPECIFICITY,
    CategoryResult,
    Evaluation,
    Thresholds,
    direction_label,
    evaluate,
    evaluate_category,
    flag_rows,
    severity,
    specificity_ratio,
    thresholds_from,
)
from autolabel.audit.facts import SEVERITY_ACTIONS, AuditOutcome, AuditPlan, build_facts
from autolabel.audit.pairs import (
    NEUTRAL,
    Pair,
    PairSource,
    builtin_pairs,
    diff_spans,
    load_crows,
    load_pair_sets,
    load_winobias,
    neutral_pairs,
    parse_pairs_spec,
)
from autolabel.audit.report import render_html, write_report
from autolabel.audit.run import AuditResult, audit_key, config_hash, plan_audit, run_audit
from autolabel.audit.stats import (
    PairedStats,
    bh_qvalues,
    bootstrap_dz_ci,
    effect_size,
    paired_stats,
    paired_t_p,
    random_directions,
    wilcoxon_p,
)
from autolabel.audit.taxonomy import (
    EMBED_THRESHOLD,
    AuditError,
    Category,
    JudgeVerdict,
    Taxonomy,
    category_similarity,
    default_embedder,
    lexicon_matches,
    llm_judge,
    load_taxonomy,
    parse_judge_reply,
    tier1,
)

__all__ = [
    "EMBED_THRESHOLD", "NEUTRAL", "SEVERITY_ACTIONS", "SPECIFICITY", "AuditError",
    "AuditOutcome", "AuditPlan", "AuditResult", "Category", "CategoryResult", "Evaluation",
    "JudgeVerdict", "Pair", "PairActivations", "PairSource", "PairedStats", "Taxonomy",
    "Thresholds", "audit_key", "bh_qvalues", "bootstrap_dz_ci", "build_facts", "builtin_pairs",
    "category_similarity", "config_hash", "default_embedder", "diff_spans", "direction_label",
    "effect_size", "evaluate", "evaluate_category", "flag_rows", "lexicon_matches",
    "llm_judge", "load_crows", "load_pair_sets", "load_taxonomy", "load_winobias",
    "neutral_pairs", "pair_activations", "paired_stats", "paired_t_p", "parse_judge_reply",
    "parse_pairs_spec", "plan_audit", "random_directions", "render_html", "run_audit",
    "severity", "span_max", "span_token_mask", "specificity_ratio", "thresholds_from", "tier1",
    "token_activations", "wilcoxon_p", "write_report",
]
