"""The local executor: everything in this process, exactly as ``autolabel`` always ran."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from autolabel.collect import CollectSettings, collect
from autolabel.corpus import SplitTally
from autolabel.executors.base import CollectOutcome, ModelIdentity, Progress, SAESnapshot
from autolabel.loading import RunContext, batches_of, corpus_windows

T = TypeVar("T")


class LocalExecutor:
    """Runs work in this process, on the run context's model and SAE (each loaded once)."""

    name = "local"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def identity(self) -> ModelIdentity:
        """The context's model and SAE (loading them if nothing loaded them yet)."""
        subject, sae = self.ctx.subject, self.ctx.sae
        return ModelIdentity(subject.model_id, subject.revision, subject.layer,
                             SAESnapshot.of(sae), self.ctx.sae_metrics)

    def collect(self, features: list[int], settings: CollectSettings,
                progress: Progress) -> CollectOutcome:
        """One streaming pass over the budgeted corpus, counting windows per split."""
        config, subject = self.ctx.config, self.ctx.subject
        tally = SplitTally()
        windows = tally.counted(corpus_windows(config, subject.tokenizer, config.collect.tokens))
        batches = batches_of(config, subject.tokenizer, windows)
        seen = [0]

        def advance(n: int) -> None:
            seen[0] += n
            progress(n)

        results = collect(subject, self.ctx.sae, batches, features, settings, advance)
        return CollectOutcome(results, seen[0], tally)

    def map_batches(self, factory: Callable[[], Any], method: str,
                    batches: Iterable[T]) -> Iterator[tuple[T, Any]]:
        """One worker, built once, called on every batch in order."""
        worker = factory()
        call = getattr(worker, method)
        for batch in batches:
            yield batch, call(batch)

    def close(self) -> None:
        """Nothing to release: the run context owns what was loaded."""
