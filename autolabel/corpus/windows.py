"""Deterministic train/validation/test splits, shards, fixed-size token windows, padded batches.

A document's split comes from a seeded sha256 of its id (never Python's salted ``hash()``), and
every window of a document inherits it, so no document feeds more than one of: the examples an
explanation is written from (train), those candidates are chosen on (validation), and those the
chosen one is scored on (test). Documents are tokenised one at a time; the corpus of token ids is
never held in memory.

Shards (scale-out): other bits of the same hash put each document in one shard. A budgeted read
is planned once (``plan_corpus``: where the budget ends, a ``CorpusCut``), after which each shard
reads the corpus on its own (``shard_windows``), tokenising only its documents; together the
shards yield exactly the windows of one budgeted read (``iter_windows``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autolabel.corpus.sources import iter_documents
from autolabel.errors import CorpusError, InputError

if TYPE_CHECKING:
    import torch

# A trailing chunk with fewer document tokens than this is dropped: a window of one or two tokens
# after BOS carries almost no context and its activations are dominated by position effects.
MIN_CHUNK_TOKENS = 4
SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True)
class Window:
    """A model input: BOS, then up to ``window - 1`` consecutive tokens of one document."""

    document_id: str
    split: str
    start: int
    token_ids: tuple[int, ...]


@dataclass
class WindowBatch:
    """Right-padded tensors for a list of windows, with the windows kept for provenance."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    windows: list[Window]


@dataclass(frozen=True)
class WindowSpec:
    """How a corpus becomes windows: its source, window size and split assignment."""

    source: str
    window: int = 64
    seed: int = 0
    test_fraction: float = 0.5
    validation_fraction: float = 0.0
    text_field: str = "text"


@dataclass(frozen=True)
class CorpusCut:
    """Where a token budget ends in the corpus stream: the last window read (the ``ordinal``-th
    document, 0-based, its window at ``start``, cut to ``length`` tokens with BOS), so that
    shards reading the corpus apart stop exactly where one reader would have."""

    ordinal: int
    start: int
    length: int


@dataclass
class SplitTally:
    """Documents, windows and tokens read per split (for the empty/tiny split warnings)."""

    documents: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLIT_NAMES, 0))
    windows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLIT_NAMES, 0))
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLIT_NAMES, 0))
    _last: str | None = field(default=None, compare=False, repr=False)

    def add(self, window: Window) -> None:
        if window.document_id != self._last:
            self.documents[window.split] += 1
            self._last = window.document_id
        self.windows[window.split] += 1
        self.tokens[window.split] += len(window.token_ids)

    def counted(self, windows: Iterable[Window]) -> Iterator[Window]:
        """Pass windows through, counting them."""
        for window in windows:
            self.add(window)
            yield window


@dataclass(frozen=True)
class CorpusPlan:
    """A budgeted corpus read once: where it ends and what each split got."""

    cut: CorpusCut | None  # None: the corpus yielded no window at all
    tally: SplitTally


def _unit(document_id: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}\x00{document_id}".encode()).digest()


def assign_split(document_id: str, seed: int = 0, test_fraction: float = 0.5,
                 validation_fraction: float = 0.0) -> str:
    """Return "train", "validation" or "test" for a document, from a seeded sha256 of its id.

    sha256 (not ``hash()``, which is salted per process) makes the split identical on every run
    and machine; the seed lets a user draw an independent split without renaming documents.
    The splits are nested intervals of one number u in [0, 1): u < test → test, u < test +
    validation → validation, else train. Train documents therefore stay train when the held-out
    fractions are re-divided (0.5 test becoming 0.3 test + 0.2 validation).
    """
    _check_fractions(test_fraction, validation_fraction)
    unit = int.from_bytes(_unit(document_id, seed)[:8], "big") / 2**64
    if unit < test_fraction:
        return "test"
    return "validation" if unit < test_fraction + validation_fraction else "train"


def document_shard(document_id: str, seed: int, n_shards: int) -> int:
    """The shard (0 … n_shards - 1) that reads a document: other bits of the same seeded sha256
    as its split, so a document and all its windows sit in one shard and keep their split."""
    if n_shards < 1:
        raise InputError(f"n_shards must be at least 1 (got {n_shards}).")
    return int.from_bytes(_unit(document_id, seed)[8:16], "big") % n_shards


def iter_windows(
    spec: str,
    tokenizer: Any,
    window: int = 64,
    seed: int = 0,
    test_fraction: float = 0.5,
    text_field: str = "text",
    max_tokens: int | None = None,
    validation_fraction: float = 0.0,
) -> Iterator[Window]:
    """Stream BOS-prefixed windows of consecutive, non-overlapping document tokens.

    Each document is tokenised without special tokens and cut into chunks of ``window - 1``
    tokens; each chunk is prefixed with BOS so every window starts from the same clean state the
    model saw in training. Chunks shorter than ``MIN_CHUNK_TOKENS`` (the tail of a document, or a
    very short document) are dropped. ``max_tokens`` bounds the tokens fed to the model (BOS
    included): the last window is cut short so the total never exceeds it.
    """
    ws = WindowSpec(spec, window, seed, test_fraction, validation_fraction, text_field)
    for _ordinal, win in budgeted_windows(ws, tokenizer, max_tokens):
        yield win


def budgeted_windows(spec: WindowSpec, tokenizer: Any,
                     max_tokens: int | None) -> Iterator[tuple[int, Window]]:
    """``(document ordinal, window)`` pairs of the corpus, cut at ``max_tokens``."""
    _check_window_args(spec, max_tokens)
    budget = max_tokens
    for ordinal, win in _document_windows(spec, tokenizer, None):
        if budget is not None:
            if budget - 1 < MIN_CHUNK_TOKENS:
                return
            win = Window(win.document_id, win.split, win.start, win.token_ids[:budget])
            if len(win.token_ids) - 1 < MIN_CHUNK_TOKENS:
                return
            budget -= len(win.token_ids)
        yield ordinal, win


def plan_corpus(spec: WindowSpec, tokenizer: Any, max_tokens: int | None) -> CorpusPlan:
    """Read the budgeted corpus once: where it ends (for shards) and the split tally."""
    tally, cut = SplitTally(), None
    for ordinal, win in budgeted_windows(spec, tokenizer, max_tokens):
        tally.add(win)
        cut = CorpusCut(ordinal, win.start, len(win.token_ids))
    return CorpusPlan(cut, tally)


def shard_windows(spec: WindowSpec, tokenizer: Any, cut: CorpusCut, shard: int,
                  n_shards: int) -> Iterator[Window]:
    """The windows of one shard's documents, up to ``cut``: over all shards, exactly the
    windows of one budgeted read. Documents of other shards are skipped without tokenising."""
    _check_window_args(spec, None)
    for ordinal, win in _document_windows(spec, tokenizer, (shard, n_shards), cut.ordinal):
        if ordinal == cut.ordinal and win.start >= cut.start:
            if win.start == cut.start:
                yield Window(win.document_id, win.split, win.start, win.token_ids[:cut.length])
            return
        yield win


def _document_windows(spec: WindowSpec, tokenizer: Any, shard: tuple[int, int] | None,
                      last: int | None = None) -> Iterator[tuple[int, Window]]:
    """Every window of every document (of one shard), with the document's ordinal.

    Consecutive pieces of one document (see ``corpus.sources``) are tokenised one at a time and
    joined into one token stream, so windows do not depend on where a long line was cut and
    memory stays bounded by the piece size.
    """
    bos, size = _bos_id(tokenizer), spec.window - 1
    ordinal, current, skip = -1, None, False
    buffer: list[int] = []
    offset = 0
    split = "train"
    for piece in iter_documents(spec.source, spec.text_field):
        if piece.id != current:
            if not skip and len(buffer) >= MIN_CHUNK_TOKENS:
                yield ordinal, Window(str(current), split, offset, (bos, *buffer))
            ordinal, current, buffer, offset = ordinal + 1, piece.id, [], 0
            if last is not None and ordinal > last:
                return
            skip = shard is not None and document_shard(piece.id, spec.seed, shard[1]) != shard[0]
            split = assign_split(piece.id, spec.seed, spec.test_fraction, spec.validation_fraction)
        if skip:
            continue
        buffer += _encode(tokenizer, piece.text)
        full = len(buffer) - len(buffer) % size
        for lo in range(0, full, size):
            yield ordinal, Window(piece.id, split, offset, (bos, *buffer[lo:lo + size]))
            offset += size
        buffer = buffer[full:]
    if current is not None and not skip and len(buffer) >= MIN_CHUNK_TOKENS:
        yield ordinal, Window(str(current), split, offset, (bos, *buffer))


def batch_windows(windows: Iterable[Window], batch_size: int, pad_id: int,
                  width: int | None = None) -> Iterator[WindowBatch]:
    """Group windows into right-padded ``[B, T]`` long tensors with a matching attention mask.

    Right padding keeps every window's BOS at position 0 (so positions match training) regardless
    of which side the tokenizer itself pads on; the mask marks real tokens with 1. With
    ``width`` every batch is padded to that many tokens: measured on CPU (Gemma 3 270M and the
    tiny test model), a window's activations are then bit-identical whatever windows share its
    batch, while padding only to the batch's longest window changed them in the last bits.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1 (got {batch_size}); pass a positive size.")
    group: list[Window] = []
    for win in windows:
        group.append(win)
        if len(group) == batch_size:
            yield _pad(group, pad_id, width)
            group = []
    if group:
        yield _pad(group, pad_id, width)


def _pad(group: list[Window], pad_id: int, fixed: int | None = None) -> WindowBatch:
    """Build the padded tensors for one batch."""
    import torch  # heavy (~3 s); only a collection pads batches
    width = max([len(w.token_ids) for w in group] + [fixed or 0])
    input_ids = torch.full((len(group), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(group), width), dtype=torch.long)
    for row, win in enumerate(group):
        input_ids[row, : len(win.token_ids)] = torch.tensor(win.token_ids, dtype=torch.long)
        mask[row, : len(win.token_ids)] = 1
    return WindowBatch(input_ids=input_ids, attention_mask=mask, windows=group)


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Tokenise one document without special tokens (BOS is added per window instead).

    ``verbose=False`` silences the "longer than model max length" warning: we never feed the
    whole document to the model, only windows of it.
    """
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _bos_id(tokenizer: Any) -> int:
    """The tokenizer's BOS id; every window needs one."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        raise CorpusError(
            "The tokenizer has no BOS token; set tokenizer.bos_token (e.g. to its <bos> or "
            "end-of-text token) before building windows."
        )
    return int(bos)


def _check_fractions(test_fraction: float, validation_fraction: float) -> None:
    """Reject fractions outside [0, 1] and held-out fractions that add up to more than 1."""
    if not 0.0 <= test_fraction <= 1.0:
        raise InputError(f"test_fraction must be between 0 and 1 (got {test_fraction}).")
    if not 0.0 <= validation_fraction <= 1.0 - test_fraction:
        raise InputError(
            f"validation_fraction must be between 0 and 1 - test_fraction = "
            f"{1.0 - test_fraction:g} (got {validation_fraction}); lower one of the two."
        )


def _check_window_args(spec: WindowSpec, max_tokens: int | None) -> None:
    """Fail before reading any text when the window settings cannot work."""
    if spec.window < MIN_CHUNK_TOKENS + 1:
        raise InputError(
            f"window must be at least {MIN_CHUNK_TOKENS + 1} tokens (got {spec.window}); "
            "use a larger window such as 64 or 128."
        )
    _check_fractions(spec.test_fraction, spec.validation_fraction)
    if max_tokens is not None and max_tokens < 1:
        raise InputError(f"max_tokens must be positive (got {max_tokens}); omit it for no limit.")

