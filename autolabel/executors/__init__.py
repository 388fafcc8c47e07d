"""Executors: where a stage's heavy work runs, this process (``local``) or a Ray cluster (``ray``).

``make_executor(ctx)`` picks one from ``run.executor``; ``using_executor`` scopes one to a block.
Modules: :mod:`~autolabel.executors.base` (the interface and what crosses it),
:mod:`~autolabel.executors.local`, :mod:`~autolabel.executors.on_ray` (connecting, sharded
collection, actor pools), :mod:`~autolabel.executors.actors` (the code Ray actors run),
:mod:`~autolabel.executors.pools` (the explain/score workers pool actors hold, and how their
LLM calls and spending come back to the driver).
Ray is optional: only ``run.executor = "ray"`` imports it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from autolabel.executors.base import (
    CollectOutcome,
    Executor,
    ExecutorError,
    ModelIdentity,
    SAESnapshot,
)
from autolabel.executors.local import LocalExecutor
from autolabel.executors.on_ray import RayExecutor, connect
from autolabel.loading import RunContext


def make_executor(ctx: RunContext) -> Executor:
    """The configured executor over ``ctx`` (its config, database and loaded objects)."""
    if ctx.config.run.executor == "ray":
        return RayExecutor(ctx)
    return LocalExecutor(ctx)


@contextmanager
def using_executor(ctx: RunContext, executor: Executor | None = None) -> Iterator[Executor]:
    """``executor`` as is (its owner closes it), or a new one closed when the block ends."""
    if executor is not None:
        yield executor
        return
    made = make_executor(ctx)
    try:
        yield made
    finally:
        made.close()


__all__ = [
    "CollectOutcome",
    "Executor",
    "ExecutorError",
    "LocalExecutor",
    "ModelIdentity",
    "RayExecutor",
    "SAESnapshot",
    "connect",
    "make_executor",
    "using_executor",
]
