"""The code Ray actors run. Plain classes: ``on_ray`` wraps them with ``ray.remote`` at run time,
so importing this module needs no Ray.

A ``CollectActor`` loads the subject model and SAE once, in its constructor, and then collects
whole shards: ``collect_shard`` is a pure function of its arguments (config, features, the
corpus cut, the shard number), which is what lets Ray retry it on a restarted actor when a
worker process dies, with no bookkeeping of ours. A ``PoolActor`` hosts any worker built by a
factory (the explain/score stages' LLM clients) for its whole life.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autolabel.collect import CollectSettings, ExampleCollector, collect_state
from autolabel.config import Config
from autolabel.corpus import CorpusCut
from autolabel.executors.base import ModelIdentity, SAESnapshot
from autolabel.loading import load_subject_for, resolve_sae, shard_batches


def set_threads(threads: int) -> None:
    """Give torch the CPUs Ray reserved for this actor, not every core of the node."""
    import torch  # heavy; only inside Ray worker processes

    torch.set_num_threads(max(1, threads))


class CollectActor:
    """Holds the subject model and SAE for its whole life; collects shards of the corpus."""

    def __init__(self, config_data: dict[str, Any], threads: int) -> None:
        set_threads(threads)
        self.config = Config.model_validate(config_data)
        self.subject = load_subject_for(self.config)
        self.sae, self.metrics = resolve_sae(self.config, self.subject)

    def identity(self) -> ModelIdentity:
        """What the driver registers in the database for this model and SAE."""
        s = self.subject
        return ModelIdentity(s.model_id, s.revision, s.layer, SAESnapshot.of(self.sae),
                             self.metrics)

    def collect_shard(self, features: list[int], settings: CollectSettings, cut: CorpusCut,
                      shard: int, n_shards: int, counter: Any) -> ExampleCollector | None:
        """Forward → SAE encode → collector over one shard; the partial state goes back to the
        driver (None when the shard holds no window). ``counter`` is a ``ProgressCounter``
        actor handle, told about tokens as batches finish (fire and forget)."""
        batches = shard_batches(self.config, self.subject.tokenizer, cut, shard, n_shards)

        def tick(n: int) -> None:
            counter.add.remote(n)

        return collect_state(self.subject, self.sae, batches, features, settings, tick)


class ProgressCounter:
    """Tokens processed so far, summed over actors (the driver polls it for progress bars and
    deadlines). A retried shard counts twice; the driver clamps to the planned total."""

    def __init__(self) -> None:
        self.tokens = 0

    def add(self, n: int) -> None:
        self.tokens += int(n)

    def total(self) -> int:
        return self.tokens


class PoolActor:
    """A worker built once by ``factory`` (e.g. an explainer holding its LLM client), kept for
    the actor's life; ``call`` runs one of its methods on one batch."""

    def __init__(self, factory: Callable[[], Any], threads: int) -> None:
        set_threads(threads)
        self.worker = factory()

    def call(self, method: str, batch: Any) -> Any:
        return getattr(self.worker, method)(batch)
