"""Scale-out: several ``autolabel run --worker`` processes share one batch through PostgreSQL.

The configured features are cut into batches, one ``work_items`` row each. A worker claims a
row with ``SELECT … FOR UPDATE SKIP LOCKED`` (so two workers never wait on, or take, the same
row), refreshes its heartbeat from a thread while it runs collect → explain → score restricted
to that batch, and marks it done. A worker that dies stops heart-beating; once its heartbeat is
older than the stale timeout another worker takes the row over, and because every stage skips
work already stored, the batch resumes where it stopped. Natural unique keys make duplicate
examples, explanations or scores impossible; the queue only makes sure every batch is processed.

Times are the database's ``now()``, never a worker's clock, so machines with skewed clocks
agree on what is stale. SQLite has no ``SKIP LOCKED``: workers refuse it with a one-line error.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert

from autolabel.db import Collection, WorkItem
from autolabel.errors import AutolabelError, BudgetExceeded
from autolabel.hashing import content_hash
from autolabel.loading import RunContext, collection_spec
from autolabel.pipeline import collect_stage, explain_stage, score_stage
from autolabel.runs import RunSummary, StageResult, finish_run, guarded, start_run
from autolabel.selection import parse_feature_range, range_spec
from autolabel.store import register_sae, start_collection

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from autolabel.config import Config
    from autolabel.db import Database
    from autolabel.loading import RunContext
    from autolabel.runs import Progress

ProgressFactory = Callable[[str], "Progress"]  # stage name -> progress callback
WORK_STAGES = ("collect", "explain", "score")  # embed and audit need every feature: run after
PLAN_LOCK_KEY = 7_315_202_613  # advisory lock: "autolabel work planning"
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class WorkPlan:
    """What the configured batch is: its SAE, its work key and its feature indices."""

    sae_id: int
    sae_name: str
    key: str
    features: list[int]


@dataclass
class WorkerSummary:
    """What one worker did, and the state of the whole queue when it left."""

    worker: str
    run_id: int
    status: str  # ok | partial | failed
    done: int = 0
    failed: int = 0
    features: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    queue: dict[str, int] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """Same codes as ``autolabel run``: 0 ok, 1 failed, 3 partial (budget or deadline)."""
        return {"ok": 0, "partial": 3}.get(self.status, 1)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready summary (printed by the CLI, stored in ``runs.summary``)."""
        return {**self.__dict__, "seconds": round(self.seconds, 2)}


def require_postgres(database: Database) -> None:
    """Workers need row locks that skip locked rows; SQLite has none."""
    if database.dialect != "postgresql":
        raise AutolabelError("--worker needs PostgreSQL (SQLite has no SKIP LOCKED); use "
                             "`autolabel run` without --worker, or --db postgresql://…")


def default_worker_id() -> str:
    """``host:pid``: unique among live workers and readable in ``work_items.worker``."""
    return f"{socket.gethostname()}:{os.getpid()}"


# ---------------------------------------------------------------------------------------------
# planning


def work_key(config: Config, collection_key: str) -> str:
    """Identity of the work: the collection plus everything that changes explanations/scores.

    Budgets, deadlines and batch sizes are left out: changing them is the same work.
    """
    stages = [s for s in config.run.stages if s in WORK_STAGES]
    llm = (config.llm.provider, config.llm.model, config.llm.base_url, config.llm.temperature)
    return content_hash("work-v1", collection_key, stages, llm,
                        config.explain.model_dump(mode="json"),
                        config.scoring.model_dump(mode="json"))


def plan_items(database: Database, sae_id: int, key: str, features: list[int],
               batch_size: int) -> int:
    """Insert the pending batches of ``features`` once; returns how many rows were new.

    Runs under a transaction-level advisory lock and ``ON CONFLICT DO NOTHING``, so workers that
    arrive together plan the work exactly once.
    """
    if batch_size < 1:
        raise AutolabelError(f"batch size must be at least 1 (got {batch_size})")
    chunks = [features[i:i + batch_size] for i in range(0, len(features), batch_size)]
    rows = [{"sae_id": sae_id, "key": key, "feature_lo": c[0], "feature_hi": c[-1] + 1,
             "features": range_spec(c), "status": "pending", "attempts": 0} for c in chunks]
    if not rows:
        return 0
    with database.session() as session:
        _plan_lock(session)
        stmt = insert(WorkItem).values(rows).on_conflict_do_nothing(
            index_elements=["sae_id", "key", "feature_lo"]).returning(WorkItem.id)
        return len(session.execute(stmt).all())


def _plan_lock(session: Session) -> None:
    """Serialise planning across workers until the transaction ends."""
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PLAN_LOCK_KEY})


def prepare_work(config: Config, database: Database, ctx: RunContext | None = None) -> WorkPlan:
    """Resolve the configured SAE and register it and its collection row once, under a lock.

    Doing this before any batch runs stops workers from racing to insert the same ``saes`` or
    ``collections`` row (both have unique keys) when they start together.
    """

    ctx = ctx or RunContext(config, database)

    subject, sae, metrics = ctx.subject, ctx.sae, ctx.sae_metrics
    spec = collection_spec(config, subject.model_id, subject.revision, sae.content_hash)
    with database.session() as session:
        _plan_lock(session)
        sae_id, sae_name = _register(session, sae, subject.layer, metrics, spec)
    features = parse_feature_range(config.collect.features, sae.d_sae)
    return WorkPlan(sae_id, sae_name, work_key(config, spec.key()), features)


def _register(session: Session, sae: Any, layer: int, metrics: dict[str, Any] | None,
              spec: Any) -> tuple[int, str]:
    """The SAE row, plus the collection row when it does not exist yet (never reset a done one)."""

    record = register_sae(session, sae, layer, metrics)
    if session.scalar(select(Collection.id).where(Collection.key == spec.key())) is None:
        start_collection(session, record.id, spec, run_id=None)
    return record.id, record.name


def plan_work(config: Config, database: Database, batch_size: int) -> int:
    """Create the pending work items for the configured features, once (see plan_items)."""
    require_postgres(database)
    plan = prepare_work(config, database)
    return plan_items(database, plan.sae_id, plan.key, plan.features, batch_size)


# ---------------------------------------------------------------------------------------------
# the queue


def _claimable(key: str | None, stale_after_s: float, max_attempts: int) -> ColumnElement[bool]:
    """Pending rows, failed rows with attempts left, and rows whose worker stopped beating."""
    stale = WorkItem.heartbeat_at < func.now() - timedelta(seconds=stale_after_s)
    cond = or_(WorkItem.status == "pending",
               and_(WorkItem.status == "failed", WorkItem.attempts < max_attempts),
               and_(WorkItem.status == "claimed", stale, WorkItem.attempts < max_attempts))
    return and_(cond, WorkItem.key == key) if key is not None else cond


def claim(database: Database, worker_id: str, stale_after_s: float, *, key: str | None = None,
          max_attempts: int = DEFAULT_MAX_ATTEMPTS, run_id: int | None = None) -> WorkItem | None:
    """Claim the lowest claimable batch in one transaction; None when nothing is claimable.

    ``SKIP LOCKED`` makes concurrent claimers pass over each other's rows instead of waiting.
    ``attempts`` counts claims, so a batch that keeps killing its workers ends up failed.
    """
    require_postgres(database)
    with database.session() as session:
        _give_up_exhausted(session, key, stale_after_s, max_attempts)
        item = session.scalar(select(WorkItem).where(_claimable(key, stale_after_s, max_attempts))
                              .order_by(WorkItem.feature_lo, WorkItem.id).limit(1)
                              .with_for_update(skip_locked=True))
        if item is None:
            return None
        item.status, item.worker, item.run_id, item.error = "claimed", worker_id, run_id, None
        item.claimed_at = item.heartbeat_at = func.now()
        item.attempts += 1
        session.flush()
        session.refresh(item)
        return item


def _give_up_exhausted(session: Session, key: str | None, stale_after_s: float,
                       max_attempts: int) -> None:
    """Mark failed the stale claims that used all their attempts (their workers kept dying).

    Rows another claimer holds are skipped, so concurrent sweeps never wait on or deadlock
    with each other.
    """
    stale = WorkItem.heartbeat_at < func.now() - timedelta(seconds=stale_after_s)
    cond = and_(WorkItem.status == "claimed", stale, WorkItem.attempts >= max_attempts)
    if key is not None:
        cond = and_(cond, WorkItem.key == key)
    locked = select(WorkItem.id).where(cond).with_for_update(skip_locked=True)
    session.execute(update(WorkItem).where(WorkItem.id.in_(locked)).values(
        status="failed", finished_at=func.now(),
        error=f"worker stopped heart-beating on each of {max_attempts} attempts"))


def heartbeat(database: Database, item_id: int, worker_id: str) -> bool:
    """Refresh a claim; False when the row is no longer ours (taken over as stale)."""
    with database.engine.begin() as conn:
        result = conn.execute(update(WorkItem).where(
            WorkItem.id == item_id, WorkItem.worker == worker_id, WorkItem.status == "claimed",
        ).values(heartbeat_at=func.now()))
        return bool(result.rowcount)


@contextmanager
def heartbeating(database: Database, item_id: int, worker_id: str,
                 every_s: float) -> Iterator[threading.Event]:
    """Beat from a daemon thread while the body runs; the yielded event is set if we lose it."""
    stop, lost = threading.Event(), threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                if not heartbeat(database, item_id, worker_id):
                    lost.set()
            except Exception:  # noqa: BLE001 - a blip must not kill the batch; next beat retries
                continue

    thread = threading.Thread(target=beat, name=f"heartbeat-{item_id}", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join()


def mark_done(database: Database, item_id: int) -> None:
    """Done, whoever holds the claim now: every stage of the batch has finished."""
    with database.session() as session:
        session.execute(update(WorkItem).where(WorkItem.id == item_id).values(
            status="done", finished_at=func.now(), error=None))


def mark_failed(database: Database, item_id: int, worker_id: str, error: str) -> None:
    """Failed with the error (claimable again while attempts remain); only if still ours."""
    with database.session() as session:
        session.execute(update(WorkItem).where(
            WorkItem.id == item_id, WorkItem.worker == worker_id, WorkItem.status == "claimed",
        ).values(status="failed", finished_at=func.now(), error=error[:4000]))


def release(database: Database, item_id: int, worker_id: str) -> None:
    """Hand a batch back untouched (budget or deadline ran out): the attempt does not count."""
    with database.session() as session:
        session.execute(update(WorkItem).where(
            WorkItem.id == item_id, WorkItem.worker == worker_id, WorkItem.status == "claimed",
        ).values(status="pending", worker=None, attempts=WorkItem.attempts - 1))


def queue_counts(database: Database, key: str | None = None) -> dict[str, int]:
    """Rows per status (for the key when given)."""
    query = select(WorkItem.status, func.count()).group_by(WorkItem.status)
    if key is not None:
        query = query.where(WorkItem.key == key)
    with database.session() as session:
        return {str(s): int(n) for s, n in session.execute(query).all()}


# ---------------------------------------------------------------------------------------------
# processing


def _batch_config(config: Config, item: WorkItem) -> Config:
    """The config with ``collect.features`` narrowed to the batch."""
    collect = config.collect.model_copy(update={"features": item.features})
    return config.model_copy(update={"collect": collect})


def process(config: Config, database: Database, item: WorkItem, *, sae_name: str,
            run_id: int | None, client: Any = None, deadline: float | None = None,
            progress: ProgressFactory | None = None,
            ctx: RunContext | None = None) -> dict[str, Any]:
    """Run the configured collect/explain/score stages for the batch; each skips finished work.

    Returns the stage summaries. Progress callbacks go through ``guarded`` so the deadline and
    the crash hook (``AUTOLABEL_CRASH_AT``) work in workers exactly as in ``autolabel run``.
    """

    batch = _batch_config(config, item)
    out: dict[str, Any] = {}
    for stage in (s for s in config.run.stages if s in WORK_STAGES):
        bar = guarded(stage, progress(stage) if progress else _quiet, deadline)
        if stage == "collect":
            out[stage] = collect_stage(batch, database, progress=bar, sae_progress=bar,
                                       ctx=ctx).__dict__
        elif stage == "explain":
            out[stage] = explain_stage(batch, database, sae_name=sae_name, features=item.features,
                                       run_id=run_id, client=client, progress=bar,
                                       ctx=ctx).__dict__
        else:
            out[stage] = score_stage(batch, database, sae_name=sae_name, features=item.features,
                                     run_id=run_id, client=client, progress=bar,
                                     ctx=ctx).__dict__
    return out


def _quiet(done: int, total: int) -> None:
    """Progress sink when the caller shows none."""


def needs_llm(config: Config) -> bool:
    """Whether any configured work stage will call the LLM (so the client is worth loading)."""
    stages = set(config.run.stages)
    explains = "explain" in stages and any(e != "tokens" for e in config.explain.explainers)
    scores = "score" in stages and (any(s != "simulation" for s in config.scoring.scorers)
                                    or config.scoring.simulator != "embedding")
    return explains or scores


def _work_on(config: Config, database: Database, item: WorkItem, plan: WorkPlan,
             state: dict[str, Any], summary: WorkerSummary, every_s: float) -> bool:
    """Process one claimed batch and record the outcome; False means stop (budget/deadline)."""
    with heartbeating(database, item.id, summary.worker, every_s):
        try:
            process(config, database, item, sae_name=plan.sae_name, run_id=summary.run_id,
                    client=state["client"], deadline=state["deadline"],
                    progress=state["progress"], ctx=state["ctx"])
        except BudgetExceeded as exc:
            release(database, item.id, summary.worker)
            summary.status, summary.errors = "partial", [*summary.errors, str(exc)]
            return False
        except Exception as exc:  # noqa: BLE001 - any failure is recorded on the row and retried
            mark_failed(database, item.id, summary.worker, f"{type(exc).__name__}: {exc}")
            summary.failed += 1
            summary.errors.append(f"{item.features}: {type(exc).__name__}: {exc}")
            return True
    mark_done(database, item.id)
    summary.done += 1
    summary.features += len(_indices(item.features))
    return True


def _indices(spec: str) -> list[int]:
    """Indices of a batch spec (its bounds are already valid)."""

    return parse_feature_range(spec)


def run_worker(config: Config, database: Database, *, worker_id: str | None = None,
               stale_after_s: float = 60.0, batch_size: int = 8,
               max_attempts: int = DEFAULT_MAX_ATTEMPTS, progress: ProgressFactory | None = None,
               argv: list[str] | None = None, use_cache: bool = True,
               poll_s: float | None = None) -> WorkerSummary:
    """Plan (once, whoever comes first), then claim and process batches until none are left.

    A worker that finds nothing claimable but sees batches still claimed by others waits and
    polls, so that it can take over a batch whose worker dies; it leaves when every batch is
    done or has failed ``max_attempts`` times. Embed and audit are not run here: they need all
    features, so run ``autolabel run`` once afterwards (it skips everything the workers did).
    """

    require_postgres(database)
    if stale_after_s <= 0:
        raise AutolabelError(f"stale timeout must be positive (got {stale_after_s})")
    summary = WorkerSummary(worker_id or default_worker_id(), 0, "ok")
    summary.run_id = start_run(database, "run --worker", config, list(argv or []))
    start = time.monotonic()
    try:
        _worker_loop(config, database, summary, stale_after_s, batch_size, max_attempts,
                     progress, use_cache, poll_s)
    except Exception as exc:
        summary.status, summary.errors = "failed", [*summary.errors, str(exc)]
        raise
    finally:
        summary.seconds = time.monotonic() - start
        _finish(database, summary)
    return summary


def _worker_loop(config: Config, database: Database, summary: WorkerSummary,
                 stale_after_s: float, batch_size: int, max_attempts: int,
                 progress: ProgressFactory | None, use_cache: bool,
                 poll_s: float | None) -> None:
    """Claim → process → mark, until the queue for this work key is drained."""

    ctx = RunContext(config, database, run_id=summary.run_id, use_cache=use_cache)
    plan = prepare_work(config, database, ctx)
    plan_items(database, plan.sae_id, plan.key, plan.features, batch_size)
    every_s = max(0.2, min(10.0, stale_after_s / 4))
    deadline = time.monotonic() + config.run.deadline if config.run.deadline else None
    state: dict[str, Any] = {"client": ctx.llm if needs_llm(config) else None,
                             "deadline": deadline, "progress": progress, "ctx": ctx}
    while True:
        item = claim(database, summary.worker, stale_after_s, key=plan.key,
                     max_attempts=max_attempts, run_id=summary.run_id)
        if item is None:
            if not queue_counts(database, plan.key).get("claimed"):
                break
            time.sleep(poll_s or every_s)
            continue
        if not _work_on(config, database, item, plan, state, summary, every_s):
            break
    summary.queue = queue_counts(database, plan.key)


def _finish(database: Database, summary: WorkerSummary) -> None:
    """Final status (failed when batches ran out of attempts) recorded on the worker's run."""

    if summary.status == "ok" and summary.queue.get("failed"):
        summary.status = "failed"
    error = "; ".join(summary.errors[-3:]) or None
    stage = StageResult("worker", summary.status, summary.seconds, summary.as_json())
    finish_run(database, RunSummary(summary.run_id, summary.status, [stage], None,
                                    summary.seconds, error if summary.status != "ok" else None))
