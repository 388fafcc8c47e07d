"""The explain stage: candidates from each configured explainer, from train examples only.

What is missing is decided from the stored candidates and the examples' activations, before any
text is decoded or any model is loaded; a finished stage therefore costs a few queries.

First, stored candidates that no gate (or an older one) judged are re-judged by the quality
gate from their stored reply and prompt (no LLM call); ``recheck=True`` re-judges all of them
and stops there (``autolabel explain --recheck``).
LLM calls that failed are stored as status ``error`` (retried by the next run) and counted in
``failed``: a stage with failures is partial (the CLI exits 3).
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from autolabel.config import Config
from autolabel.corpus import iter_windows
from autolabel.db import Database, SAERecord
from autolabel.errors import NotFoundError
from autolabel.examples import Example, TextExample, TokenDecoder
from autolabel.executors import Executor
from autolabel.executors.pools import (
    ExplainBatch,
    ExplainWorker,
    absorb,
    budgeted,
    relinked,
)
from autolabel.explain import (
    GATE_VERSION,
    GateConfig,
    LLMExplainer,
    TokenStatsExplainer,
    judge_reply,
    judge_text,
    prompt_facts,
)
from autolabel.llm import LLMClient
from autolabel.loading import Progress, RunContext, no_progress
from autolabel.store import (
    existing_explanations,
    feature_model_id,
    find_sae,
    load_examples,
    select_features,
    store_candidates,
)
from autolabel.store.gate import GateUpdate, StoredCandidate, apply_gate, candidates_to_gate

Examples = dict[int, list[Example]]  # feature id -> its train examples


@dataclass
class ExplainSummary:
    """What an explain stage did.

    ``failed``: LLM calls that failed and were stored as status ``error`` (retried by the
    next run); a stage with failures is partial. ``gate``: the re-check of stored candidates
    (:func:`regate`), ``rejected``: this stage's new rejections by reason.
    """

    sae: str
    features: int
    created: int
    skipped: int
    statuses: dict[str, int]
    llm: dict[str, float]
    seconds: float
    failed: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        """Whether some LLM calls failed (their candidates are retried by the next run)."""
        return self.failed > 0

    def describe(self) -> str:
        """What the CLI prints: counts, the gate's re-check and rejections, the next step."""
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items())) or "none"
        lines = [f"Explained {self.features} features of {self.sae!r}: {self.created} new "
                 f"candidate sets ({statuses}), {self.skipped} already done, LLM cost "
                 f"${self.llm.get('cost', 0.0):.4f}."]
        if self.rejected:
            lines.append(f"Rejected by the quality gate: {_counts(self.rejected)}.")
        if self.gate:
            moved = _counts(self.gate["transitions"]) or "nothing changed"
            lines.append(f"Re-checked {self.gate['checked']} stored candidates with gate "
                         f"v{self.gate['gate_version']}: {moved}; now rejected by reason: "
                         f"{_counts(self.gate['rejected']) or 'none'}.")
        if self.failed:
            lines.append(f"{self.failed} LLM calls failed; their candidates are stored as "
                         "'error' and retried by the next run (exit 3).")
        lines.append(f"Next: autolabel score --sae {self.sae}")
        return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def explain_stage(config: Config, database: Database, *, sae_name: str | None = None,
                  features: str | None = None, use_cache: bool = True, run_id: int | None = None,
                  client: LLMClient | None = None, progress: Progress = no_progress,
                  ctx: RunContext | None = None, recheck: bool = False,
                  executor: Executor | None = None) -> ExplainSummary:
    """Re-check stored candidates with the gate, then explain every selected feature with
    each configured explainer (train split only); LLM batches go to ``executor``'s actor pool
    when it is a Ray one (this process stays the only database writer)."""
    start = time.perf_counter()
    ctx = ctx or RunContext(config, database, run_id=run_id, use_cache=use_cache)
    sae, ids, model_id = feature_context(database, sae_name, features)
    gate = gate_config(config)
    gate_report = regate(database, ids, gate, force=recheck)
    tally = _Tally()
    if recheck:  # a maintenance pass over what is stored: no explainer runs, nothing loads
        return ExplainSummary(sae.name, len(ids), 0, len(ids), {}, {},
                              time.perf_counter() - start, gate=gate_report)
    examples = {fid: train_examples(database, fid) for fid in ids}
    llm_totals: dict[str, float] = {}
    for name in config.explain.explainers:
        if name == "tokens":
            _explain_tokens(config, database, examples, lambda: ctx.decoder(model_id),
                            ctx.run_id, tally, gate)
        else:
            client = client or ctx.llm
            _explain_llm(config, database, examples, ctx.decoder, model_id, client,
                         ctx.run_id, tally, progress, gate, executor)
            llm_totals = dict(getattr(client, "totals", {}))
    return ExplainSummary(sae.name, len(ids), tally.created, tally.skipped, tally.statuses,
                          llm_totals, time.perf_counter() - start, tally.failed,
                          tally.rejected, gate_report)


@dataclass
class _Tally:
    """Counts over one stage: candidate sets made/skipped, statuses, reasons, failed calls."""

    created: int = 0
    skipped: int = 0
    failed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)


def gate_config(config: Config) -> GateConfig:
    """The quality gate's knobs from ``[explain]``."""
    return GateConfig(max_chars=config.explain.max_chars, max_words=config.explain.max_words)


def feature_context(database: Database, sae_name: str | None,
                    spec: str | None) -> tuple[SAERecord, list[int], str | None]:
    """The SAE row, the ids of its selected collected features, and their subject model id."""
    with database.session() as session:
        sae = find_sae(session, sae_name)
        rows = select_features(session, sae.id, spec, sae.d_sae)
        model_id = feature_model_id(session, rows[0]) if rows else None
    if not rows:
        raise NotFoundError(f"SAE {sae.name!r} has no collected features"
                            f"{' in ' + spec if spec else ''}; run `autolabel collect` first")
    return sae, [f.id for f in rows], model_id


def train_examples(database: Database, feature_id: int) -> list[Example]:
    """A feature's train-split examples (top + quantile): the only ones explainers see."""
    with database.session() as session:
        return load_examples(session, feature_id, split="train", kinds=("top", "quantile"))


def as_text(examples: list[Example], decode: TokenDecoder) -> list[TextExample]:
    """Examples decoded to token strings for an explainer."""
    return [e.to_text(decode) for e in examples]


def corpus_background(config: Config, decode: TokenDecoder,
                      max_tokens: int = 200_000) -> dict[str, float]:
    """Token frequencies of *train* documents of the corpus (TokenStats' background)."""
    c = config.corpus
    counts: Counter[int] = Counter()
    for window in iter_windows(c.source, decode.tokenizer, window=c.window, seed=c.seed,
                               test_fraction=c.test_fraction, text_field=c.text_field,
                               max_tokens=max_tokens,
                               validation_fraction=c.validation_fraction):
        if window.split == "train":
            counts.update(window.token_ids[1:])
    ids = list(counts)
    return {tok: float(counts[i]) for i, tok in zip(ids, decode(ids), strict=True)}


def _explain_tokens(config: Config, database: Database, examples: Examples,
                    decoder: Callable[[], TokenDecoder], run_id: int | None, tally: _Tally,
                    gate: GateConfig) -> None:
    """TokenStats baseline for features that lack it."""
    explainer = TokenStatsExplainer(gate=gate)
    todo = _missing(database, examples, "tokens", "", explainer.prompt_hash, 1)
    tally.skipped += len(examples) - len(todo)
    if not todo:
        return
    decode = decoder()
    background = corpus_background(config, decode)
    results = {fid: [explainer.explain(as_text(examples[fid], decode), background)]
               for fid in todo}
    _store(database, results, run_id, tally)
    tally.created += len(todo)


def _explain_llm(config: Config, database: Database, examples: Examples,
                 decoder: Callable[[str | None], TokenDecoder], model_id: str | None,
                 client: LLMClient, run_id: int | None, tally: _Tally,
                 progress: Progress, gate: GateConfig, executor: Executor | None = None) -> None:
    """LLM candidates (best-of-k) in chunks; each chunk is stored before the next starts."""
    k = config.explain.k
    explainer = LLMExplainer(client, **_explainer_options(config, gate))
    todo = _missing(database, examples, "llm", client.model, explainer.prompt_hash, k)
    tally.skipped += len(examples) - len(todo)
    chunk = max(1, config.collect.batch_size)
    if executor is not None and executor.name == "ray" and todo:
        batches = (ExplainBatch(ids, [as_text(examples[f], decoder(model_id)) for f in ids])
                   for ids in (todo[i:i + chunk] for i in range(0, len(todo), chunk)))
        _explain_on_pool(config, database, executor, client, batches, len(todo), run_id,
                         tally, progress, gate)
        return
    try:
        for done in range(0, len(todo), chunk):
            ids = todo[done:done + chunk]
            decode = decoder(model_id)
            results = explainer.explain_many([as_text(examples[f], decode) for f in ids])
            _store(database, dict(zip(ids, results, strict=True)), run_id, tally)
            tally.created += len(ids)
            progress(done + len(ids), len(todo))
    finally:
        tally.failed += explainer.failed_calls


def _explainer_options(config: Config, gate: GateConfig) -> dict[str, Any]:
    """``LLMExplainer``'s settings from the config (the same here and on Ray actors)."""
    return {"template": config.explain.template, "variant": config.explain.variant,
            "k": config.explain.k, "seed": config.scoring.seed,
            "temperature": config.llm.temperature, "gate": gate,
            "concurrency": config.llm.concurrency}


def _explain_on_pool(config: Config, database: Database, executor: Executor,
                     client: LLMClient, batches: Iterator[ExplainBatch], total: int,
                     run_id: int | None, tally: _Tally, progress: Progress,
                     gate: GateConfig) -> None:
    """The chunks on a pool of Ray actors, each holding its explainer and LLM client; every
    reply's candidates are stored here as it arrives, its LLM calls recorded and counted
    against the run's budget (checked before each chunk is handed out)."""
    factory = functools.partial(ExplainWorker, config.model_dump(mode="json"),
                                _explainer_options(config, gate))
    done = 0
    for batch, reply in executor.map_batches(factory, "explain", budgeted(batches, client)):
        results = relinked(reply.results, absorb(client, reply))
        tally.failed += reply.failed
        _store(database, dict(zip(batch.ids, results, strict=True)), run_id, tally)
        tally.created += len(batch.ids)
        done += len(batch.ids)
        progress(done, total)


def _missing(database: Database, examples: Examples, explainer: str, llm_model: str,
             prompt_hash: str, k: int) -> list[int]:
    """Features lacking a final candidate.

    Status 'error' is retried (a server hiccup), except for features whose train examples never
    activate: their error is a fact about the data, and retrying it every night is noise.
    """
    with database.session() as session:
        have = existing_explanations(session, list(examples), explainer, llm_model, prompt_hash)

    def final(f: int, c: int) -> bool:
        row = have.get((f, c))
        return row is not None and (row.status != "error" or not _activates(examples[f]))

    return [f for f in examples if not all(final(f, c) for c in range(k))]


def _activates(examples: list[Example]) -> bool:
    """Whether any train example of a feature has a positive activation."""
    return any(float(e.activations.max(initial=0.0)) > 0 for e in examples)


def _store(database: Database, results: dict[int, list[Any]], run_id: int | None,
           tally: _Tally) -> None:
    """Store one chunk of candidates in one transaction and count their statuses."""
    with database.session() as session:
        counts = store_candidates(session, results, run_id)
    for status, n in counts.items():
        tally.statuses[status] = tally.statuses.get(status, 0) + n
    for cands in results.values():
        for cand in cands:
            if cand.reason:
                tally.rejected[cand.reason] = tally.rejected.get(cand.reason, 0) + 1


# --------------------------------------------------------------------------- re-checking


def regate(database: Database, feature_ids: list[int], gate: GateConfig,
           force: bool = False) -> dict[str, Any]:
    """Re-judge stored candidates that no gate (or an older one) judged — all of them with
    ``force`` — from their stored reply and prompt, and write what changed.

    Returns ``checked``, ``changed``, ``transitions`` ("ok -> rejected": n …) and
    ``rejected`` (reason: n over the re-checked rows now rejected).
    """
    with database.session() as session:
        stored = candidates_to_gate(session, feature_ids, GATE_VERSION, force=force)
    if not stored:
        return {}
    updates = [_rejudge(c, gate) for c in stored]
    with database.session() as session:
        apply_gate(session, updates, GATE_VERSION)
    transitions: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for old, new in zip(stored, updates, strict=True):
        if (old.status, old.reason, old.text) != (new.status, new.reason, new.text):
            transitions[f"{old.status} -> {new.status}"] += 1
        if new.reason:
            reasons[new.reason] += 1
    return {"checked": len(stored), "changed": sum(transitions.values()),
            "transitions": dict(transitions), "rejected": dict(reasons),
            "gate_version": GATE_VERSION}


def _rejudge(cand: StoredCandidate, gate: GateConfig) -> GateUpdate:
    """One stored candidate through the gate: its raw reply when it has one (LLM), else its
    text (token statistics), against the explanations its stored prompt showed."""
    if cand.raw_reply is not None:
        verdict = judge_reply(cand.raw_reply, cand.prompt, gate)
    elif cand.text:
        verdict = judge_text(cand.text, prompt_facts(cand.prompt), gate)
    else:
        return GateUpdate(cand.id, cand.status, cand.text, cand.reason, None)
    return GateUpdate(cand.id, verdict.status, verdict.text, verdict.reason, verdict.error)
