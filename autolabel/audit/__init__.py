"""Bias audit: taxonomy, three tiers of evidence per SAE feature, flags, and the audit report.

Three tiers, each weaker alone than together, because a compliance reviewer must be able to tell
"the label mentions women" from "the feature measurably reacts to women":

1. **Label evidence** (:mod:`~autolabel.audit.taxonomy`) — the feature's trusted or weak label
   matches a bias category by lexicon or by embedding similarity to the category description.
   Alone this means "review", never "biased".
2. **Activation evidence** (:mod:`~autolabel.audit.activations`, :mod:`~autolabel.audit.stats`,
   :mod:`~autolabel.audit.evaluate`) — counterfactual sentence pairs (:mod:`~autolabel.audit.pairs`)
   differing only in a demographic term go through model + SAE; each pair is oriented by
   demographic pole (:mod:`~autolabel.audit.orient`), and the per-pair span maxima are tested
   per feature against random directions and neutral word swaps, with replication across
   template families and sources (:mod:`~autolabel.audit.replication`).
3. **Direction** — the feature's group difference is larger where the sentence states the
   stereotype than where it contradicts it. Only assessed where tier 2 holds.

:mod:`~autolabel.audit.run` orchestrates (and skips an identical finished audit before loading
anything); :mod:`~autolabel.audit.flags` turns tiers into flags and severities;
:mod:`~autolabel.audit.facts` and :mod:`~autolabel.audit.cards` build the report data that
:mod:`~autolabel.audit.report` renders; :mod:`~autolabel.audit.documents` gives each report a
document id unique across databases and guards other audits' reports.
"""

from __future__ import annotations

from autolabel.audit.activations import (
    PairActivations,
    encode_selected,
    length_buckets,
    pair_activations,
    span_inputs,
    span_max,
    span_token_mask,
    token_activations,
)
from autolabel.audit.documents import check_overwrite, database_key, database_label, document_id
from autolabel.audit.evaluate import (
    SPECIFICITY,
    CategoryResult,
    Evaluation,
    Thresholds,
    direction_label,
    evaluate,
    evaluate_category,
    specificity_ratio,
    thresholds_from,
)
from autolabel.audit.facts import build_facts
from autolabel.audit.flags import SEVERITY_ORDER, flag_rows, severity
from autolabel.audit.orient import Orientation, orient_pairs, pair_sign
from autolabel.audit.pairs import (
    NEUTRAL,
    Pair,
    PairSource,
    builtin_pairs,
    diff_parts,
    diff_spans,
    load_crows,
    load_pair_sets,
    load_user_pairs,
    load_winobias,
    neutral_pairs,
    parse_pairs_spec,
)
from autolabel.audit.plan import SEVERITY_ACTIONS, AuditOutcome, AuditPlan
from autolabel.audit.replication import replication, replication_units
from autolabel.audit.report import render_html, write_report
from autolabel.audit.run import AuditResult, audit_key, config_hash, plan_audit, run_audit
from autolabel.audit.stats import (
    ContrastStats,
    PairedStats,
    bh_qvalues,
    bootstrap_dz_ci,
    contrast_stats,
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
    Pole,
    Taxonomy,
    category_similarity,
    default_embedder,
    lexicon_matches,
    llm_judge,
    load_taxonomy,
    parse_judge_reply,
    pole_matches,
    tier1,
)

__all__ = [
    "EMBED_THRESHOLD", "NEUTRAL", "SEVERITY_ACTIONS", "SEVERITY_ORDER", "SPECIFICITY",
    "AuditError", "AuditOutcome", "AuditPlan", "AuditResult", "Category", "CategoryResult",
    "ContrastStats", "Evaluation", "JudgeVerdict", "Orientation", "Pair", "PairActivations",
    "PairSource", "PairedStats", "Pole", "Taxonomy", "Thresholds", "audit_key", "bh_qvalues",
    "bootstrap_dz_ci", "build_facts", "builtin_pairs", "category_similarity",
    "check_overwrite", "config_hash", "contrast_stats", "database_key", "database_label",
    "default_embedder", "diff_parts", "diff_spans", "direction_label", "document_id", "effect_size",
    "encode_selected", "evaluate", "evaluate_category", "flag_rows", "length_buckets",
    "lexicon_matches", "llm_judge", "load_crows", "load_pair_sets", "load_taxonomy",
    "load_user_pairs", "load_winobias", "neutral_pairs", "orient_pairs", "pair_activations",
    "pair_sign", "paired_stats", "paired_t_p", "parse_judge_reply", "parse_pairs_spec",
    "plan_audit", "pole_matches", "random_directions", "render_html", "replication",
    "replication_units", "run_audit", "severity", "span_inputs", "span_max",
    "span_token_mask", "specificity_ratio", "thresholds_from", "tier1", "token_activations",
    "wilcoxon_p", "write_report",
]
