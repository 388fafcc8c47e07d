"""``run_audit``: audit an SAE's features for bias and write the flags and the report.

The audit is planned from cheap identities first (the SAE's weights hash read from disk or from
an SAE already in memory, its row, the stored labels, the config, taxonomy and pair sources), so
an identical finished audit is found and returned without loading the model, the SAE or the
embedder: a nightly run with nothing to do pays none of that fixed cost.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autolabel.audit.activations import Progress, pair_activations
from autolabel.audit.documents import check_overwrite, document_id, report_is
from autolabel.audit.evaluate import evaluate, thresholds_from
from autolabel.audit.facts import build_facts
from autolabel.audit.flags import flag_rows
from autolabel.audit.pairs import Pair, PairSource, load_pair_sets
from autolabel.audit.plan import EVIDENCE_VERDICTS, AuditOutcome, AuditPlan
from autolabel.audit.report import write_report
from autolabel.audit.stats import json_safe
from autolabel.audit.taxonomy import AuditError, Taxonomy, apply_judge, load_taxonomy, tier1
from autolabel.config import Config
from autolabel.db import Database
from autolabel.errors import InputError
from autolabel.hashing import content_hash
from autolabel.loading import RunContext, known_sae
from autolabel.runs import crash_point
from autolabel.store.audits import (
    AuditedSAE,
    audit_labels,
    collected_indices,
    find_audited_sae,
    find_finished_audit,
    finish_audit,
    insert_flags,
    register_audited_sae,
    set_document_id,
    start_audit,
    top_examples,
)


@dataclass
class AuditResult:
    """What an audit stage did: paths, counts, and whether it was skipped as already done."""

    audit_id: int
    document_id: str | None
    html_path: Path
    json_path: Path
    n_features: int
    n_pairs: int
    n_flags: int
    flagged_features: int
    by_tier: dict[int, int]
    skipped: bool = False
    seconds: float = 0.0


def run_audit(ctx: RunContext, *, pairs: str, out_dir: Path,
              features: Sequence[int] | None = None, argv: Sequence[str] = (),
              progress: Progress | None = None, force: bool = False,
              taxonomy: str | Path | None = None, judge: Any = None,
              overwrite: bool = False, per_audit: bool = False) -> AuditResult:
    """Audit an SAE's features for bias; write Audit + Flag rows and the HTML/JSON report.

    Features default to those in the ``features`` table for this SAE (what was collected and
    labelled); with none collected, all ``d_sae`` latents (tier 1 then has no labels to read).
    An audit whose key (config hash + taxonomy + SAE hash + pair-source hashes + feature set +
    labels) matches a finished one is returned as ``skipped`` before anything heavy is loaded,
    unless ``force=True``. The embedder is loaded only when there are labels to check.

    The report goes to ``out_dir`` (``out_dir/<document id>`` with ``per_audit``, as
    ``autolabel run`` does); a folder holding another audit's report is refused before any
    model loads unless ``overwrite``.
    """
    start = time.perf_counter()
    tax = load_taxonomy(taxonomy if taxonomy is not None else ctx.config.audit.taxonomy)
    pair_list, sources = load_pair_sets(pairs, tax.names())
    sae_row = _known_sae_row(ctx) or _register_sae(ctx)
    plan = plan_audit(ctx, sae_row, tax, pairs, pair_list, sources, features, argv)
    done = None if force else finished_audit(ctx.database, plan)
    if done is not None:
        return done
    if not per_audit:
        check_overwrite(Path(out_dir), None, overwrite)
    outcome = compute(ctx, plan, progress, judge)
    return _store_and_report(ctx.database, plan, outcome, Report(Path(out_dir), per_audit,
                                                                 overwrite), start)


def _known_sae_row(ctx: RunContext) -> AuditedSAE | None:
    """The SAE's row found by its weights hash without loading it; None if only loading can
    tell (a hub SAE, an untrained default) or the SAE was never registered."""
    if ctx.in_memory("sae"):
        sae_hash: str | None = ctx.sae.content_hash
    else:
        identity = known_sae(ctx.config)
        sae_hash = identity.content_hash if identity is not None else None
    if sae_hash is None:
        return None
    with ctx.database.session() as session:
        return find_audited_sae(session, sae_hash)


def _register_sae(ctx: RunContext) -> AuditedSAE:
    """Load the SAE (and the subject it must fit) and register it."""
    sae, layer = ctx.sae, getattr(ctx.subject, "layer", None)
    with ctx.database.session() as session:
        return register_audited_sae(session, sae, layer, ctx.sae_metrics)


def plan_audit(ctx: RunContext, sae_row: AuditedSAE, tax: Taxonomy, spec: str,
               pairs: list[Pair], sources: list[PairSource], features: Sequence[int] | None,
               argv: Sequence[str]) -> AuditPlan:
    """The feature set, the labels and the audit key, read from the database alone."""
    with ctx.database.session() as session:
        known = collected_indices(session, sae_row.id)
        chosen = list(features) if features is not None else (known or range(sae_row.d_sae))
        feats = np.array(sorted(set(chosen)), dtype=np.int64)
        bad = feats[(feats < 0) | (feats >= sae_row.d_sae)]
        if bad.size:
            raise InputError(f"feature {int(bad[0])} is out of range for this SAE "
                             f"(0..{sae_row.d_sae - 1}); fix the feature list")
        labels = audit_labels(session, sae_row.id, feats.tolist())
    config = ctx.config
    key = audit_key(config, tax, sae_row.content_hash, spec, sources, feats, labels)
    return AuditPlan(config, config_hash(config), key, tax, thresholds_from(config), spec,
                     pairs, sources, sae_row, feats, labels, list(argv))


def audit_key(config: Config, tax: Taxonomy, sae_hash: str, spec: str,
              sources: Sequence[PairSource], feats: np.ndarray,
              labels: dict[int, dict[str, Any]]) -> str:
    """Identity of an audit: same key, same result (so it can be skipped).

    The labels (explanations and their scores) are part of it: a nightly run that explained
    more features must not reuse yesterday's tier-1 evidence.
    """
    label_hash = hashlib.sha256(json.dumps(labels, sort_keys=True, default=str).encode())
    return content_hash(config_hash(config), tax.sha256, sae_hash, spec,
                        [s.sha256 for s in sources], hashlib.sha256(feats.tobytes()).hexdigest(),
                        label_hash.hexdigest())


def config_hash(config: Config) -> str:
    """sha256 of the canonical JSON of the whole config (db URL excluded: not a result input)."""
    data = config.model_dump(mode="json", exclude={"db"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def finished_audit(database: Database, plan: AuditPlan) -> AuditResult | None:
    """A finished audit with the plan's key whose report file still exists, as a result."""
    with database.session() as session:
        found = find_finished_audit(session, plan.sae.id, plan.key)
    if found is None or not report_is(Path(found.report_path), found.document_id):
        return None  # no such audit, or its report was removed or replaced: audit again
    s, html = found.summary, Path(found.report_path)
    return AuditResult(found.audit_id, found.document_id, html, html.with_name("report.json"),
                       s.get("n_features", 0), s.get("n_pairs", 0), s.get("n_flags", 0),
                       s.get("flagged_features", 0),
                       {int(k): v for k, v in s.get("by_tier", {}).items()}, skipped=True)


def compute(ctx: RunContext, plan: AuditPlan, progress: Progress | None,
            judge: Any) -> AuditOutcome:
    """Tiers 1-3: label matching, one batched forward pass over every pair, the statistics."""
    subject, sae = ctx.subject, ctx.sae
    if sae.content_hash != plan.sae.content_hash:
        raise AuditError("the SAE's weights changed while the audit was planned; run it again")
    th, timings = plan.thresholds, {}
    t0 = time.perf_counter()
    texts = evidence_texts(plan.labels)
    t1 = tier1(texts, plan.taxonomy, ctx.embedder.embed if texts else None, th.embed)
    if judge is not None:
        apply_judge(t1, texts, plan.taxonomy, judge)
    timings["tier1_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    acts = pair_activations(subject, sae, plan.pairs, plan.feats, th.n_random, th.seed,
                            progress, max_tokens=int(ctx.config.audit.max_batch_tokens))
    timings["forward_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = evaluate(plan.pairs, plan.taxonomy, acts, plan.feats, t1, th)
    flags = flag_rows(ev)
    timings["statistics_s"] = time.perf_counter() - t0
    flagged = sorted({int(f["feature"]) for f in flags})
    with ctx.database.session() as session:
        corpus = top_examples(session, plan.sae.id, flagged)
    return AuditOutcome(subject, sae, acts, ev, flags, timings, corpus)


def evidence_texts(labels: dict[int, dict[str, Any]]) -> dict[int, str]:
    """Label texts tier 1 may use: trusted or weak verdicts only (never rejected, at-floor or
    unscored labels: a label nobody could verify is not evidence)."""
    return {int(f): v["text"] for f, v in labels.items()
            if v.get("verdict") in EVIDENCE_VERDICTS and v.get("text")}


@dataclass(frozen=True)
class Report:
    """Where a report goes and whether it may replace another audit's."""

    out_dir: Path
    per_audit: bool
    overwrite: bool

    def folder(self, doc_id: str) -> Path:
        """The report's folder for this document id."""
        return self.out_dir / doc_id if self.per_audit else self.out_dir


def _store_and_report(database: Database, plan: AuditPlan, outcome: AuditOutcome,
                      report: Report, start: float) -> AuditResult:
    """One transaction: run + audit + flags; the report is rendered inside it, so a crash
    while writing the report leaves no audit that claims a report."""
    with database.session() as session:
        ids = start_audit(session, sae_id=plan.sae.id, key=plan.key, pairs=plan.spec,
                          config=plan.config.model_dump(mode="json"), argv=plan.argv)
        doc_id = document_id(database.url, ids.audit_id)
        set_document_id(session, ids.audit_id, doc_id)
        insert_flags(session, ids.audit_id, plan.sae.id, outcome.flags)
        facts = build_facts(plan, outcome, ids, doc_id, database.url,
                            time.perf_counter() - start)
        crash_point("report", 1)
        folder = report.folder(doc_id)
        check_overwrite(folder, doc_id, report.overwrite)
        html, js = write_report(facts, folder)
        finish_audit(session, ids, str(html), json_safe(facts["summary"]))
    s = facts["summary"]
    return AuditResult(ids.audit_id, doc_id, html, js, s["n_features"], s["n_pairs"],
                       s["n_flags"], s["flagged_features"],
                       {int(k): v for k, v in s["by_tier"].items()},
                       seconds=time.perf_counter() - start)
