"""The Ray executor: collection sharded by corpus documents over a pool of Ray actors.

How a collection runs (issue 17):

1. ``run.ray_workers`` actors start (default: as many as the cluster's CPUs, or GPUs when
   ``run.ray_gpus_per_worker`` > 0, allow); each loads the subject model and SAE once, asking
   Ray for ``num_cpus`` / ``num_gpus``.
2. Meanwhile the driver reads the budgeted corpus once, tokenising only (``corpus_plan``): where
   the token budget ends (a ``CorpusCut``) and how many documents each split got.
3. Actor i collects shard i: the documents whose hash puts them there (the same hash that fixes
   their split), read by the actor itself up to the cut, forward → SAE encode → collector for
   every requested feature, in one pass. It returns its partial collector state.
4. The driver merges the states. Keys and tie-breaks are pure functions of window identity, so
   the merge is exact: the database equals that of ``--executor local`` over the same corpus.

Explain and score hand feature batches to ``map_batches``: a pool of actors, each holding its
worker (:mod:`autolabel.executors.pools`) for its life, results given back in batch order.

Faults are Ray's business: actors restart (``max_restarts``) and a shard whose worker process
died is re-run on the restarted actor (``max_task_retries``); a shard is a pure function of its
arguments, so a retry computes the same state. The driver stays the only database writer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any, TypeVar

from autolabel.collect import CollectSettings, ExampleCollector
from autolabel.errors import AutolabelError, CollectionError
from autolabel.executors.actors import CollectActor, PoolActor, ProgressCounter
from autolabel.executors.base import CollectOutcome, ExecutorError, ModelIdentity, Progress
from autolabel.loading import RunContext, corpus_plan

T = TypeVar("T")
RETRIES = 3  # Ray restarts an actor, and re-runs its interrupted call, this many times
POLL_S = 0.5
IN_FLIGHT = 2  # batches queued per pool actor: one running, one ready to start
_END: Any = object()
WORKER_ENV_PREFIXES = ("OPENAI_", "AUTOLABEL_", "HF_", "TRANSFORMERS_")


def ray_module() -> ModuleType:
    """Ray, or a one-line error saying how to install it."""
    try:
        import ray  # heavy (~2 s) and optional: only with --executor ray
    except ImportError:
        raise ExecutorError("--executor ray needs Ray: pip install 'autolabel[ray]' (or "
                            "'ray[default]'), or run with --executor local") from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of an explicit cluster address, None for 'auto' / 'local'."""
    if address in ("auto", "local"):
        return None
    host, _, port = address.removeprefix("ray://").rstrip("/").rpartition(":")
    try:
        return (host or "127.0.0.1"), int(port)
    except ValueError:
        raise ExecutorError(f"bad --ray-address {address!r}; write HOST:PORT (the address "
                            "`ray start --head` prints) or 'auto'") from None


def probe(address: str | None) -> None:
    """Fail in seconds, with one line, when an explicit cluster address does not answer (Ray
    itself would retry for a minute and end in a traceback)."""
    target = _host_port(address) if address else None
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=5).close()
    except OSError as exc:
        raise ExecutorError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start one "
            "with `ray start --head` and pass the address it prints, or drop --ray-address "
            "to start a local one") from None


def connect(address: str | None) -> bool:
    """Join (or start) a Ray cluster; True when this call did, so ``close`` shuts it down."""
    ray = ray_module()
    if ray.is_initialized():
        return False
    probe(address)
    try:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
    except Exception as exc:  # noqa: BLE001 - Ray raises many types; each becomes one line
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ExecutorError(f"cannot connect to the Ray cluster at {address or 'local'} "
                            f"({reason}); check `ray status` there, or use --executor local"
                            ) from None
    return True


def worker_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The driver's settings actors need and a cluster's workers would not have: the LLM
    server's key and URL (``OPENAI_*``, read by the SDK), autolabel's own (``AUTOLABEL_*``:
    its cache folder) and Hugging Face's offline switches (``HF_*``). They travel in the
    actors' Ray ``runtime_env``, which the cluster keeps while the run lasts."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k.startswith(WORKER_ENV_PREFIXES)}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


class RayExecutor:
    """Collection sharded over Ray actors; ``map_batches`` over a pool of Ray actors."""

    name = "ray"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        ray_module()  # fail at once, not mid-run, when Ray is missing or the cluster is away
        probe(ctx.config.run.ray_address)
        self._ray: ModuleType | None = None
        self._owns = False
        self._collectors: list[Any] | None = None
        self._identity: ModelIdentity | None = None

    @property
    def ray(self) -> ModuleType:
        """Ray, connected on first use: a run with nothing to do starts no cluster."""
        if self._ray is None:
            self._owns = connect(self.ctx.config.run.ray_address)
            self._ray = ray_module()
        return self._ray

    def n_workers(self) -> int:
        """Configured actors, else as many as the cluster's CPUs (or GPUs) allow."""
        run = self.ctx.config.run
        if run.ray_workers:
            return int(run.ray_workers)
        resources = self.ray.cluster_resources()
        if run.ray_gpus_per_worker > 0:
            return max(1, int(resources.get("GPU", 0) // run.ray_gpus_per_worker))
        return max(1, int(resources.get("CPU", 1) // run.ray_cpus_per_worker))

    def _options(self) -> dict[str, Any]:
        run = self.ctx.config.run
        return {"num_cpus": run.ray_cpus_per_worker, "num_gpus": run.ray_gpus_per_worker,
                "max_restarts": RETRIES, "max_task_retries": RETRIES,
                "runtime_env": {"env_vars": worker_env()}}

    def _actors(self) -> list[Any]:
        """The collect actors, started once (each loads the model and SAE in its constructor)."""
        if self._collectors is None:
            run = self.ctx.config.run
            remote = self.ray.remote(CollectActor).options(**self._options())
            data = self.ctx.config.model_dump(mode="json")
            threads = int(run.ray_cpus_per_worker)
            self._collectors = [remote.remote(data, threads) for _ in range(self.n_workers())]
        return self._collectors

    def identity(self) -> ModelIdentity:
        """The model and SAE as the first actor loaded them (all load the same config)."""
        if self._identity is None:
            self._identity = self._get(self._actors()[0].identity.remote())
        return self._identity

    def collect(self, features: list[int], settings: CollectSettings,
                progress: Progress) -> CollectOutcome:
        """Plan the corpus cut, collect every shard on its actor, merge the partial states."""
        actors = self._actors()
        config = self.ctx.config
        plan = corpus_plan(config, self.ctx.tokenizer(), config.collect.tokens)
        if plan.cut is None:
            raise CollectionError("the corpus yielded no token windows; check the corpus spec")
        total = sum(plan.tally.tokens.values())
        counter = self.ray.remote(ProgressCounter).options(num_cpus=0).remote()
        refs = [actor.collect_shard.remote(features, settings, plan.cut, i, len(actors), counter)
                for i, actor in enumerate(actors)]
        self._wait(refs, counter, progress, total)
        merged: ExampleCollector | None = None
        for state in self._get(refs):
            if state is not None:
                merged = state if merged is None else _merged(merged, state)
        if merged is None:
            raise CollectionError("the corpus yielded no token windows; check the corpus spec")
        return CollectOutcome(merged.results(), total, plan.tally)

    def _wait(self, refs: list[Any], counter: Any, progress: Progress, total: int) -> None:
        """Poll until every shard is done, reporting tokens; an exception from ``progress``
        (deadline, crash hook) cancels the shards before it propagates (``close`` then kills
        the actors, which stops them for good)."""
        pending, reported = list(refs), 0
        try:
            while pending:
                _, pending = self.ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
                done = min(int(self.ray.get(counter.total.remote())), total)
                if not pending:
                    done = total
                if done > reported:
                    progress(done - reported)
                    reported = done
        except BaseException:
            for ref in pending:
                with contextlib.suppress(Exception):  # already finished, or not cancellable
                    self.ray.cancel(ref)
            raise

    def _get(self, refs: Any) -> Any:
        """``ray.get`` with Ray's failures as one-line errors (ours re-raised as they were)."""
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, AutolabelError):
                raise cause from None
            raise ExecutorError(f"a Ray worker failed: {_first_line(cause or exc)}") from None
        except self.ray.exceptions.RayActorError as exc:
            raise ExecutorError(f"a Ray worker died {RETRIES + 1} times ({_first_line(exc)}); "
                                "check the workers' memory and logs (`ray logs`)") from None

    def map_batches(self, factory: Callable[[], Any], method: str,
                    batches: Iterable[T]) -> Iterator[tuple[T, Any]]:
        """A pool of actors, each holding ``factory()`` for its life; yields ``(batch,
        worker.method(batch))`` in batch order (as a local run does). ``batches`` is read lazily, at
        most ``IN_FLIGHT`` per actor ahead of the results, so a budget checked while it is read
        stops the work within those batches (an error reading it is raised once the batches
        already handed out, and paid for, have been yielded). A call whose actor died is re-run
        by Ray on the restarted actor. The collect actors are stopped first: they would hold
        the CPUs (or GPUs) the pool needs."""
        self._stop_collectors()
        remote = self.ray.remote(PoolActor).options(**self._options())
        threads = int(self.ctx.config.run.ray_cpus_per_worker)
        run = _Dispatch([remote.remote(factory, threads) for _ in range(self.n_workers())],
                        method, iter(batches))
        try:
            while run.fill():
                if run.next_ready():
                    batch, ref = run.give()
                    yield batch, self._get(ref)
                    continue
                ready, _ = self.ray.wait(list(run.running), num_returns=1)
                del run.running[ready[0]]
        finally:
            for ref in run.running:
                with contextlib.suppress(Exception):  # finished, or not cancellable
                    self.ray.cancel(ref)
            for actor in run.pool:
                self.ray.kill(actor)

    def _stop_collectors(self) -> None:
        for actor in self._collectors or []:
            self.ray.kill(actor)
        self._collectors = None

    def close(self) -> None:
        """Stop the actors; shut Ray down if this executor started it."""
        if self._ray is None:
            return
        self._stop_collectors()
        if self._owns:
            self._ray.shutdown()
            self._owns = False


class _Dispatch:
    """Hands batches to the least-loaded pool actor and gives results back in batch order
    (so the driver writes rows in the order a local run does); a finished batch keeps its
    actor's slot until it is given back, so at most ``IN_FLIGHT`` per actor are held."""

    def __init__(self, pool: list[Any], method: str, source: Iterator[Any]) -> None:
        self.pool, self.method, self.source = pool, method, source
        self.running: dict[Any, int] = {}  # ref -> sequence number
        self.held: dict[int, tuple[Any, int, Any]] = {}  # seq -> (batch, actor index, ref)
        self.load = [0] * len(pool)
        self.sent = self.given = 0
        self.stopped: Exception | None = None

    def fill(self) -> bool:
        """Hand out batches while actors have room; False once all are given back. An error
        from the source (the budget) stops the handing out and is raised after the rest."""
        while self.stopped is None and sum(self.load) < IN_FLIGHT * len(self.pool):
            try:
                batch = next(self.source, _END)
            except Exception as exc:  # noqa: BLE001 - re-raised once in-flight work is back
                self.stopped = exc
                break
            if batch is _END:
                break
            i = self.load.index(min(self.load))
            ref = self.pool[i].call.remote(self.method, batch)
            self.running[ref], self.held[self.sent] = self.sent, (batch, i, ref)
            self.load[i] += 1
            self.sent += 1
        if not self.held and self.stopped is not None:
            raise self.stopped
        return bool(self.held)

    def next_ready(self) -> bool:
        """Whether the next batch in order has its result."""
        return self.given in self.held and self.held[self.given][2] not in self.running

    def give(self) -> tuple[Any, Any]:
        """The next batch in order and its result's ref; its actor gets room for another."""
        batch, i, ref = self.held.pop(self.given)
        self.load[i] -= 1
        self.given += 1
        return batch, ref


def _merged(into: ExampleCollector, other: ExampleCollector) -> ExampleCollector:
    into.merge(other)
    return into
