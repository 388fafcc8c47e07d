"""The explain templates by name: a record format, a prompt per model kind, and their sizes.

A *template family* fixes how examples are shown (format, how many, how wide a window around
each maximum) and has one file per model kind: a completion prompt for base models (few-shot
text ending in an open slot) and a chat prompt for instruct models and chat-only servers.

- ``bills`` — Bills et al. (2023): ``token<TAB>activation`` lines, ten 64-token windows; the
  format published numbers use, kept so results can be compared with them.
- ``delphi`` — running text with activating tokens marked ``<<like this>>``, eight diverse
  examples cut to 16 tokens around their maximum.
- ``pairs`` — Neuronpedia-style activating-token/activation pairs only, eight diverse examples.

Which family a provider gets by default was chosen by measurement
(``benchmarks/bench_explain.py``; numbers in ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autolabel.errors import ConfigError
from autolabel.prompting.compact import format_compact
from autolabel.prompting.records import Pair, format_records
from autolabel.prompting.rendering import render, render_messages

VARIANTS = ("completion", "chat")
# Chosen by measurement: benchmarks/bench_explain.py (see benchmarks/RESULTS.md, issue 14).
# On the offline base Gemma, pairs had the fewest prompt tokens, the fastest explain stage and
# the fewest gate rejections; delphi's running text was mostly continued or copied, not
# described. Servers get pairs too: the one measurement available offline (prompt tokens)
# favours it; no instruct model was measured.
DEFAULT_FAMILY = {"local": "pairs", "openai": "pairs", "fake": "pairs"}


@dataclass(frozen=True)
class Family:
    """How a family shows examples, and its template file per model kind."""

    name: str
    records: str  # bills | delphi | pairs
    max_examples: int
    window: int
    files: tuple[str, str]  # (completion, chat)

    def file(self, variant: str) -> str:
        return self.files[VARIANTS.index(variant)]


FAMILIES = {
    "bills": Family("bills", "bills", 10, 64, ("explain_completion.j2", "explain_chat.j2")),
    "delphi": Family("delphi", "delphi", 8, 16,
                     ("explain_delphi_completion.j2", "explain_delphi_chat.j2")),
    "pairs": Family("pairs", "pairs", 8, 16,
                    ("explain_pairs_completion.j2", "explain_pairs_chat.j2")),
}


def family(name: str, provider: str) -> Family:
    """The family called ``name`` (``auto``: the measured default for ``provider``)."""
    if name == "auto":
        name = DEFAULT_FAMILY.get(provider, "pairs")
    if name not in FAMILIES:
        raise ConfigError(f"unknown explain template {name!r}; set explain.template to one "
                          f"of auto, {', '.join(FAMILIES)}")
    return FAMILIES[name]


def template_context(fam: Family, examples: Sequence[Pair]) -> dict[str, Any]:
    """The variables a family's templates receive (corpus text already neutralised)."""
    if fam.records == "bills":
        ranked = sorted(examples, key=lambda e: -max(e[1], default=0.0))  # strongest first
        recs = format_records(ranked, max_examples=fam.max_examples,
                              max_context_tokens=fam.window)
        return {"records": recs.records, "sparse": recs.sparse}
    compact = format_compact(examples, fam.records, max_examples=fam.max_examples,
                             window=fam.window)
    return {"lines": compact.lines}


def render_prompt(fam: Family, variant: str,
                  examples: Sequence[Pair]) -> str | list[dict[str, str]]:
    """The rendered prompt: text for completion templates, messages for chat templates."""
    context = template_context(fam, examples)
    if variant == "chat":
        return render_messages(fam.file("chat"), **context)
    return render(fam.file("completion"), **context)
