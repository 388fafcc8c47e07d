"""A stand-in pool worker, in a module with no heavy imports so Ray actors unpickle it fast."""

from __future__ import annotations


class Squarer:
    """What an explainer holding an LLM client will be: built once, called per batch."""

    def run(self, batch: list[int]) -> list[int]:
        return [x * x for x in batch]
