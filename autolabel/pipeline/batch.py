"""``autolabel run``: every configured stage in order over one :class:`RunContext`.

Each stage is incremental, so a second run finds nothing to do and a killed one resumes. Budget
or deadline exhaustion stops cleanly as ``partial`` (exit 3); any other error marks the run
``failed`` (exit 1) with the work already stored kept.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import platformdirs

from autolabel.audit import database_label, run_audit
from autolabel.config import Config
from autolabel.db import Database
from autolabel.errors import AutolabelError, BudgetExceeded
from autolabel.executors import Executor, using_executor
from autolabel.loading import Progress, RunContext, no_progress
from autolabel.logs import logged_progress, stage_logger
from autolabel.pipeline.collect import collect_stage
from autolabel.pipeline.explain import explain_stage
from autolabel.pipeline.score import score_stage, scoring_needs_llm
from autolabel.runs import (
    Heartbeat,
    RunSummary,
    StageResult,
    closing_run,
    finish_run,
    guarded,
    run_lock,
    stage_headline,
    start_run,
)
from autolabel.search import index_explanations
from autolabel.store import find_sae, select_features

ProgressFactory = Callable[[str], Any]  # stage name -> progress callback
log = stage_logger()


def run_batch(config: Config, database: Database, *, wait: bool = False,
              argv: list[str] | None = None, use_cache: bool = True,
              progress_factory: ProgressFactory | None = None) -> RunSummary:
    """The nightly batch: every configured stage in order, each incremental."""
    with run_lock(database, wait):
        run_id = start_run(database, "run", config, list(argv or []), lock_held=True)
        with closing_run(database, run_id):
            ctx = RunContext(config, database, run_id=run_id, use_cache=use_cache)
            with using_executor(ctx) as executor:  # run.executor: local | ray, one per run
                summary = run_stages(ctx, progress_factory, executor)
            finish_run(database, summary)
    return summary


def run_stages(ctx: RunContext, progress_factory: ProgressFactory | None,
               executor: Executor | None = None) -> RunSummary:
    """Run stages until done, out of budget, or failed (heavy work on ``executor``)."""
    config = ctx.config
    start = time.monotonic()
    deadline = start + config.run.deadline if config.run.deadline else None
    results: list[StageResult] = []
    state: dict[str, Any] = {"report": None, "sae": None, "executor": executor}
    status, error, partial = "ok", None, False
    beat = Heartbeat(ctx.database, ctx.run_id) if ctx.run_id is not None else None
    for stage in config.run.stages:
        t0 = time.monotonic()
        log.info("stage %s: started", stage)
        try:
            progress = _progress(stage, progress_factory, deadline, beat)
            summary = STAGES[stage](ctx, state, progress)
            outcome = _outcome(summary)
            results.append(StageResult(stage, outcome, time.monotonic() - t0, summary))
            if outcome == "partial":  # LLM outage: later stages still run on what was stored
                _log_finished(results[-1], f"{summary['failed']} LLM calls failed (kept as "
                              "retryable; re-run to retry them)")
                partial = True
                continue
        except BudgetExceeded as exc:
            status, error = "partial", str(exc)
            results.append(StageResult(stage, "partial", time.monotonic() - t0, {}))
        except AutolabelError as exc:
            status, error = "failed", str(exc)
            results.append(StageResult(stage, "failed", time.monotonic() - t0, {}))
        _log_finished(results[-1], error)
        if status != "ok":
            break
    if status == "ok" and partial:
        status, error = "partial", "some LLM calls failed; re-run to retry them"
    assert ctx.run_id is not None
    return RunSummary(ctx.run_id, status, results, state["report"], time.monotonic() - start,
                      error, loaded=list(ctx.loaded))


def _outcome(summary: dict[str, Any]) -> str:
    """A stage that finished but left LLM outages behind (``failed`` calls, stored as
    retryable) is ``partial``: the run exits 3 so a nightly job knows to re-run."""
    return "partial" if summary.get("failed") else "ok"


def _log_finished(result: StageResult, error: str | None) -> None:
    """The stage's finish line: status, seconds and its headline counts (or the error)."""
    what = stage_headline(result.stage, result.summary) if result.status == "ok" else error
    log.info("stage %s: %s in %.1fs%s", result.stage, result.status, result.seconds,
             f": {what}" if what else "")


def _progress(stage: str, factory: ProgressFactory | None, deadline: float | None,
              beat: Heartbeat | None) -> Progress:
    """The stage's progress callback (a UI bar when given, periodic log lines always), guarded
    by the deadline and the crash hook, beating the run's heartbeat."""
    sink = factory(stage) if factory else no_progress
    return guarded(stage, logged_progress(stage, sink), deadline, beat)


def _collect(ctx: RunContext, state: dict[str, Any], progress: Progress) -> dict[str, Any]:
    done = collect_stage(ctx.config, ctx.database, progress=progress, sae_progress=progress,
                         ctx=ctx, executor=state.get("executor"))
    state["sae"] = done.sae
    return done.__dict__


def _explain(ctx: RunContext, state: dict[str, Any], progress: Progress) -> dict[str, Any]:
    return explain_stage(ctx.config, ctx.database, sae_name=state.get("sae"),
                         progress=progress, ctx=ctx, executor=state.get("executor")).__dict__


def _score(ctx: RunContext, state: dict[str, Any], progress: Progress) -> dict[str, Any]:
    client = ctx.llm if scoring_needs_llm(ctx.config, list(ctx.config.scoring.scorers)) else None
    return score_stage(ctx.config, ctx.database, sae_name=state.get("sae"), client=client,
                       progress=progress, ctx=ctx, executor=state.get("executor")).__dict__


def _embed(ctx: RunContext, state: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Index new explanations for semantic search (the embedding model loads only if some
    explanation lacks a vector), and bring the saved vector index up to date."""
    count, _ = index_explanations(ctx.database, ctx.embedder, progress=progress)
    return {"embedded": count, "model": ctx.embedder.name}


def default_report_dir(config: Config, sae_name: str, database_url: str) -> Path:
    """The parent folder of `autolabel run`'s audit reports (one ``<document id>`` folder per
    audit inside it): ``audit.out_dir`` if set, else
    ``<user data dir>/reports/<database name>-<database hash>/<sae>``, so two databases never
    share a report folder."""
    if config.audit.out_dir:
        return Path(config.audit.out_dir)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in sae_name)
    return (Path(platformdirs.user_data_dir("autolabel", appauthor=False)) / "reports"
            / database_label(database_url) / safe)


def _audit(ctx: RunContext, state: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Bias audit of the collected features, with its report in its own folder."""
    config, database = ctx.config, ctx.database
    with database.session() as session:
        sae = find_sae(session, state.get("sae"))
        indices = [f.index for f in select_features(session, sae.id, config.collect.features,
                                                    sae.d_sae)]
        name = sae.name
    result = run_audit(ctx, pairs=config.audit.pairs,
                       out_dir=default_report_dir(config, name, database.url),
                       features=indices, argv=sys.argv, progress=progress, per_audit=True)
    state["report"] = str(result.html_path)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in result.__dict__.items()}


STAGES: dict[str, Callable[[RunContext, dict[str, Any], Progress], dict[str, Any]]] = {
    "collect": _collect, "explain": _explain, "score": _score, "embed": _embed,
    "audit": _audit,
}
