"""The example types every stage shares: a stored window (token ids) and its decoded text.

``Example`` is what collection produces and what the store writes and reads back, field for
field, so nothing is copied between twin classes. ``TextExample`` is the same window decoded to
token strings: what explainers show an LLM and what scorers simulate. ``TokenDecoder`` turns
one into the other with one tokenizer call per distinct token id.

This module sits at the bottom of the import layers (numpy only) so that reading the database
never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Decode = Callable[[Sequence[int]], list[str]]


@dataclass
class Example:
    """One window of one feature; ``activations`` align with ``token_ids`` (no padding).

    ``split`` is train | validation | test (decided by document), ``kind`` top | quantile |
    random, ``bin`` the quantile bin (None otherwise), ``rank`` the order within its group.
    """

    split: str
    kind: str
    bin: int | None
    rank: int
    document_id: str
    start: int
    token_ids: np.ndarray
    activations: np.ndarray
    max_activation: float

    def to_text(self, decode: Decode) -> TextExample:
        """The window as token strings (what an LLM sees), keeping kind and document."""
        return TextExample(tokens=decode(self.token_ids.tolist()),
                           activations=[float(a) for a in self.activations],
                           document_id=self.document_id, kind=self.kind, split=self.split)


@dataclass
class TextExample:
    """A window decoded to token strings, with its true activations.

    Explainers read train examples of this type; scorers simulate held-out ones (``kind``
    tells activating top/quantile windows from ``random`` negatives).
    """

    tokens: list[str]
    activations: list[float]
    document_id: str
    kind: str = "top"
    split: str = "train"

    @property
    def max_activation(self) -> float:
        """Largest activation in the window (0 for an empty one)."""
        return max(self.activations, default=0.0)


class TokenDecoder:
    """Token id -> text, memoised (one tokenizer call per distinct id per run)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, ids: Sequence[int]) -> list[str]:
        missing = sorted({int(i) for i in ids} - self.cache.keys())
        if missing:
            texts = self.tokenizer.batch_decode([[i] for i in missing])
            self.cache.update(zip(missing, texts, strict=True))
        return [self.cache[int(i)] for i in ids]
