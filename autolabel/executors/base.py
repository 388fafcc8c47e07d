"""What an executor is: where the heavy work of a stage runs, behind one small interface.

Two kinds exist. ``local`` runs everything in this process (the default; needs no Ray). ``ray``
runs it on a Ray cluster (:mod:`autolabel.executors.on_ray`). Stages stay the same either way:
they ask the executor for the identity of the model and SAE it will use, hand it work, and
write what comes back. The driver (the process running the stage) is always the only database
writer, in the same idempotent transactions, so a killed run resumes the same way on both.

Two kinds of work are defined:

* ``collect(features, settings, progress)``: one pass over the corpus for every requested
  feature; the ray executor shards the corpus by document and merges partial collector states
  exactly (see :mod:`autolabel.collect.collector`).
* ``map_batches(factory, method, batches)``: a pool of long-lived workers, each built once by
  ``factory`` (its LLM client or local model loaded for its whole life), calling
  ``worker.method(batch)`` for every batch and yielding ``(batch, result)`` in batch order.
  This is what the explain and score stages hand feature batches to; locally it is a plain
  loop over one worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from autolabel.collect import CollectSettings, FeatureResult
from autolabel.corpus import SplitTally
from autolabel.errors import AutolabelError

T = TypeVar("T")
Progress = Callable[[int], None]  # tokens just processed


class ExecutorError(AutolabelError):
    """The executor cannot run (no Ray installed, cluster unreachable, a worker kept dying)."""


@dataclass
class SAESnapshot:
    """What the database records of an SAE, detached from its weights (so a Ray actor can send
    it to the driver); fits ``store.saes.SAEIdentity``."""

    source: str
    release: str | None
    sae_id: str | None
    path: Path | None
    model_id: str | None
    hook_name: str
    d_in: int
    d_sae: int
    architecture: str
    content_hash: str

    @classmethod
    def of(cls, sae: Any) -> SAESnapshot:
        """Snapshot a loaded SAE (``saes.LoadedSAE`` or anything with the same fields)."""
        return cls(sae.source, sae.release, sae.sae_id, sae.path, sae.model_id, sae.hook_name,
                   int(sae.d_in), int(sae.d_sae), sae.architecture, sae.content_hash)


@dataclass(frozen=True)
class ModelIdentity:
    """The subject model and SAE an executor collects with, as the database names them."""

    model_id: str
    revision: str | None
    layer: int
    sae: SAESnapshot
    sae_metrics: dict[str, Any] | None = None


@dataclass
class CollectOutcome:
    """One collection pass: per-feature results, tokens fed to the model, the split tally."""

    results: list[FeatureResult]
    tokens: int
    tally: SplitTally = field(default_factory=SplitTally)


class Executor(Protocol):
    """Where a stage's heavy work runs (see the module docstring)."""

    name: str

    def identity(self) -> ModelIdentity: ...

    def collect(self, features: list[int], settings: CollectSettings,
                progress: Progress) -> CollectOutcome: ...

    def map_batches(self, factory: Callable[[], Any], method: str,
                    batches: Iterable[T]) -> Iterator[tuple[T, Any]]: ...

    def close(self) -> None: ...
