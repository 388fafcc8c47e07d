"""The streaming driver: model to layer L, SAE encode, fold every batch into a collector.

Inputs are described by protocols (``SubjectLike``, ``SAELike``, ``WindowBatchLike``) so this
layer needs neither the subject loader nor the corpus module: anything with the right shape
(``corpus.WindowBatch``, a test fake) can be collected.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from autolabel.collect.collector import ExampleCollector
from autolabel.collect.types import CollectSettings, FeatureResult, check_features
from autolabel.errors import CollectionError

if TYPE_CHECKING:
    from torch import Tensor


class _WindowLike(Protocol):
    @property
    def document_id(self) -> str: ...
    @property
    def split(self) -> str: ...
    @property
    def start(self) -> int: ...


class WindowBatchLike(Protocol):
    """What ``collect`` needs from a batch (corpus.WindowBatch fits)."""

    @property
    def input_ids(self) -> Tensor: ...
    @property
    def attention_mask(self) -> Tensor: ...
    @property
    def windows(self) -> Sequence[_WindowLike]: ...


class SubjectLike(Protocol):
    """The subject model, run only up to the SAE's layer."""

    @property
    def special_token_ids(self) -> Collection[int]: ...
    def resid(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor: ...


class SAELike(Protocol):
    """An SAE: ``encode`` maps [N, d_in] residuals to [N, d_sae] latents."""

    def encode(self, x: Tensor) -> Tensor: ...


def _d_sae(sae: SAELike) -> int:
    """SAE width: ``.d_sae`` or sae-lens's ``.cfg.d_sae``."""
    width = getattr(sae, "d_sae", None)
    if width is None:
        width = getattr(getattr(sae, "cfg", None), "d_sae", None)
    if width is None:
        raise CollectionError("the SAE exposes no d_sae; load it with autolabel.saes")
    return int(width)


def encode_batch(
    subject: SubjectLike, sae: SAELike, batch: WindowBatchLike, columns: Tensor, ignore: Tensor
) -> Tensor:
    """[B, T, F] activations of the selected latents; padding/special rows are never encoded."""
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    ids, mask = batch.input_ids, batch.attention_mask
    resid = subject.resid(ids, mask)
    keep = (mask.bool() & ~torch.isin(ids, ignore.to(ids.device))).to(resid.device)
    latents = sae.encode(resid[keep])
    if len(columns) != latents.shape[1] or not bool((columns == torch.arange(len(columns))).all()):
        latents = latents[:, columns.to(latents.device)]  # skip the copy when all are selected
    out = torch.zeros((*ids.shape, len(columns)), dtype=torch.float32, device=latents.device)
    out[keep.to(latents.device)] = latents.float()
    return out


def collect(
    subject: SubjectLike,
    sae: SAELike,
    batches: Iterable[WindowBatchLike],
    features: Sequence[int],
    settings: CollectSettings = CollectSettings(),  # noqa: B008 - frozen, safe default
    progress: Callable[[int], None] | None = None,
) -> list[FeatureResult]:
    """One streaming pass: model to layer L, SAE encode, fold every batch into a collector."""
    collector = collect_state(subject, sae, batches, features, settings, progress)
    if collector is None:
        raise CollectionError("the corpus yielded no token windows; check the corpus spec")
    return collector.results()


def collect_state(
    subject: SubjectLike,
    sae: SAELike,
    batches: Iterable[WindowBatchLike],
    features: Sequence[int],
    settings: CollectSettings = CollectSettings(),  # noqa: B008 - frozen, safe default
    progress: Callable[[int], None] | None = None,
) -> ExampleCollector | None:
    """``collect`` without the final step: the collector itself (a shard's partial state, to
    be merged with the others'), or None when there were no batches at all."""
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    check_features(features, _d_sae(sae))
    special = sorted({int(t) for t in subject.special_token_ids})
    ignore, columns = torch.tensor(special, dtype=torch.int64), torch.tensor(list(features))
    collector: ExampleCollector | None = None
    with torch.no_grad():
        for batch in batches:
            acts = encode_batch(subject, sae, batch, columns, ignore)
            if collector is None:
                width = int(batch.input_ids.shape[1])
                collector = ExampleCollector(features, max(width, 1), settings, special)
            wins = batch.windows
            collector.update(
                acts,
                batch.input_ids,
                batch.attention_mask,
                [w.document_id for w in wins],
                [w.split for w in wins],
                [w.start for w in wins],
            )
            if progress is not None:
                progress(int(batch.attention_mask.sum()))
    return collector
