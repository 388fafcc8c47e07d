"""Deterministic train/test splits, fixed-size token windows and padded batches.

A document's split comes from a seeded sha256 of its id (never Python's salted ``hash()``), and
every window of a document inherits it, so no document feeds both the examples an explanation is
written from and the examples it is scored on. Documents are tokenised one at a time; the corpus
of token ids is never held in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from autolabel.corpus.sources import iter_documents
from autolabel.errors import CorpusError, InputError

# A trailing chunk with fewer document tokens than this is dropped: a window of one or two tokens
# after BOS carries almost no context and its activations are dominated by position effects.
MIN_CHUNK_TOKENS = 4


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


def assign_split(document_id: str, seed: int = 0, test_fraction: float = 0.5) -> str:
    """Return "train" or "test" for a document, from a seeded sha256 of its id.

    sha256 (not ``hash()``, which is salted per process) makes the split identical on every run
    and machine; the seed lets a user draw an independent split without renaming documents.
    """
    _check_fraction(test_fraction)
    digest = hashlib.sha256(f"{seed}\x00{document_id}".encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if unit < test_fraction else "train"


def iter_windows(
    spec: str,
    tokenizer: Any,
    window: int = 64,
    seed: int = 0,
    test_fraction: float = 0.5,
    text_field: str = "text",
    max_tokens: int | None = None,
) -> Iterator[Window]:
    """Stream BOS-prefixed windows of consecutive, non-overlapping document tokens.

    Each document is tokenised without special tokens and cut into chunks of ``window - 1``
    tokens; each chunk is prefixed with BOS so every window starts from the same clean state the
    model saw in training. Chunks shorter than ``MIN_CHUNK_TOKENS`` (the tail of a document, or a
    very short document) are dropped. ``max_tokens`` bounds the tokens fed to the model (BOS
    included): the last window is cut short so the total never exceeds it.
    """
    _check_window_args(window, test_fraction, max_tokens)
    bos = _bos_id(tokenizer)
    budget = max_tokens
    for doc in iter_documents(spec, text_field):
        split = assign_split(doc.id, seed, test_fraction)
        ids = _encode(tokenizer, doc.text)
        for start, chunk in _chunks(ids, window - 1):
            if budget is not None:
                chunk = chunk[: budget - 1]
                if len(chunk) < MIN_CHUNK_TOKENS:
                    return
                budget -= len(chunk) + 1
            yield Window(doc.id, split, start, (bos, *chunk))


def batch_windows(windows: Iterable[Window], batch_size: int, pad_id: int) -> Iterator[WindowBatch]:
    """Group windows into right-padded ``[B, T]`` long tensors with a matching attention mask.

    Right padding keeps every window's BOS at position 0 (so positions match training) regardless
    of which side the tokenizer itself pads on; the mask marks real tokens with 1.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1 (got {batch_size}); pass a positive size.")
    group: list[Window] = []
    for win in windows:
        group.append(win)
        if len(group) == batch_size:
            yield _pad(group, pad_id)
            group = []
    if group:
        yield _pad(group, pad_id)


def _pad(group: list[Window], pad_id: int) -> WindowBatch:
    """Build the padded tensors for one batch."""
    width = max(len(w.token_ids) for w in group)
    input_ids = torch.full((len(group), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(group), width), dtype=torch.long)
    for row, win in enumerate(group):
        input_ids[row, : len(win.token_ids)] = torch.tensor(win.token_ids, dtype=torch.long)
        mask[row, : len(win.token_ids)] = 1
    return WindowBatch(input_ids=input_ids, attention_mask=mask, windows=group)


def _chunks(ids: list[int], size: int) -> Iterator[tuple[int, list[int]]]:
    """Yield ``(start, chunk)`` for consecutive non-overlapping chunks, dropping short tails."""
    for start in range(0, len(ids), size):
        chunk = ids[start : start + size]
        if len(chunk) >= MIN_CHUNK_TOKENS:
            yield start, chunk


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


def _check_fraction(test_fraction: float) -> None:
    """Reject fractions outside [0, 1]."""
    if not 0.0 <= test_fraction <= 1.0:
        raise InputError(f"test_fraction must be between 0 and 1 (got {test_fraction}).")


def _check_window_args(window: int, test_fraction: float, max_tokens: int | None) -> None:
    """Fail before reading any text when the window settings cannot work."""
    if window < MIN_CHUNK_TOKENS + 1:
        raise InputError(
            f"window must be at least {MIN_CHUNK_TOKENS + 1} tokens (got {window}); "
            "use a larger window such as 64 or 128."
        )
    _check_fraction(test_fraction)
    if max_tokens is not None and max_tokens < 1:
        raise InputError(f"max_tokens must be positive (got {max_tokens}); omit it for no limit.")

