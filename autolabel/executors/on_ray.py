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

Faults are Ray's business: actors restart (``max_restarts``) and a shard whose worker process
died is re-run on the restarted actor (``max_task_retries``); a shard is a pure function of its
arguments, so a retry computes the same state. The driver stays the only database writer.
"""

from __future__ import annotations

import contextlib
import logging
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
                "max_restarts": RETRIES, "max_task_retries": RETRIES}

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
        worker.method(batch))`` as results arrive (any order). A call whose actor died is
        re-run by Ray on the restarted actor."""
        remote = self.ray.remote(PoolActor).options(**self._options())
        threads = int(self.ctx.config.run.ray_cpus_per_worker)
        pool = [remote.remote(factory, threads) for _ in range(self.n_workers())]
        items = list(batches)
        refs = {pool[i % len(pool)].call.remote(method, batch): i for i, batch in
                enumerate(items)}
        try:
            while refs:
                ready, _ = self.ray.wait(list(refs), num_returns=1)
                index = refs.pop(ready[0])
                yield items[index], self._get(ready[0])
        finally:
            for actor in pool:
                self.ray.kill(actor)

    def close(self) -> None:
        """Stop the actors; shut Ray down if this executor started it."""
        if self._ray is None:
            return
        for actor in self._collectors or []:
            self._ray.kill(actor)
        self._collectors = None
        if self._owns:
            self._ray.shutdown()
            self._owns = False


def _merged(into: ExampleCollector, other: ExampleCollector) -> ExampleCollector:
    into.merge(other)
    return into
