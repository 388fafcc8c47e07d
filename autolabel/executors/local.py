"""The local executor: everything in this process, exactly as ``autolabel`` always ran."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from autolabel.collect import CollectSettings, collect
from autolabel.corpus import SplitTally
from autolabel.executors.base import CollectOutcome, ModelIdentity, Progress, SAESnapshot
from autolabel.loading import RunContext, batches_of, corpus_windows
from autolabel.subject import ResidualMemo, SubjectModel

T = TypeVar("T")
log = logging.getLogger("autolabel.collect")


class LocalExecutor:
    """Runs work in this process, on the run context's model and SAE (each loaded once)."""

    name = "local"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def identity(self) -> ModelIdentity:
        """The context's model and SAE (loading them if nothing loaded them yet).

        If the SAE still has to be trained, on a CPU, the training's forward passes are kept
        (:class:`ResidualMemo`) for :meth:`collect`, which starts with the same batches.
        """
        subject = self.ctx.subject
        if (not self.ctx.in_memory("sae") and isinstance(subject, SubjectModel)
                and subject.device.type == "cpu"):
            subject.memo = ResidualMemo()
        try:
            sae = self.ctx.sae
        finally:
            self._stop_recording()
        return ModelIdentity(subject.model_id, subject.revision, subject.layer,
                             SAESnapshot.of(sae), self.ctx.sae_metrics)

    def _stop_recording(self) -> None:
        """Keep what the memo holds for collection; drop a memo that holds nothing."""
        memo = getattr(self.ctx.subject, "memo", None)
        if memo is not None:
            memo.recording = False
            if not len(memo):
                self.ctx.subject.memo = None

    def _drop_memo(self) -> None:
        """Free the kept residuals (after collection, or when it never came)."""
        if not self.ctx.in_memory("subject"):
            return  # never loaded: nothing was kept
        memo = getattr(self.ctx.subject, "memo", None)
        if memo is None:
            return
        self.ctx.subject.memo = None
        if memo.hits:
            log.info("collect: %d batches reused from SAE training's forward pass", memo.hits)

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

        try:
            results = collect(subject, self.ctx.sae, batches, features, settings, advance)
        finally:
            self._drop_memo()
        return CollectOutcome(results, seen[0], tally)

    def map_batches(self, factory: Callable[[], Any], method: str,
                    batches: Iterable[T]) -> Iterator[tuple[T, Any]]:
        """One worker, built once, called on every batch in order."""
        worker = factory()
        call = getattr(worker, method)
        for batch in batches:
            yield batch, call(batch)

    def close(self) -> None:
        """Free kept residuals; the run context owns (and keeps) what was loaded."""
        self._drop_memo()
