"""Compact activation records: a few diverse examples, a short window around each maximum.

Two formats, as the published explainers use them:

- **delphi** (EleutherAI's delphi): running text with the activating tokens marked
  ``<<like this>>``; consecutive activating tokens share one marker.
- **pairs** (Neuronpedia-style): only the activating tokens, each with its activation 0–10,
  in text order: ``"March" (10), "12" (1)``.

Both show each example as one line, so a prompt holds eight examples in the space the Bills
format spends on one. Corpus text is neutralised as in :mod:`.records`, and additionally every
``<`` / ``>`` of corpus text becomes ``‹`` / ``›`` and every ``"`` in a quoted token ``\\"``, so
no corpus text can forge a marker, a quote or a line break.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from autolabel.prompting.records import (
    MAX_TOKEN_CHARS,
    Pair,
    check_pair,
    context_window,
    normalise,
    sanitize_token,
)

OPEN, CLOSE = "<<", ">>"
MARKED = re.compile(r"<<([^<>]*)>>")  # a marked run, as delphi lines carry them
# What an echoed pairs record looks like in a reply (the parser drops such lines).
PAIRS_LINE = re.compile(r'^\s*(?:"[^"]*"\s*\(\d+\)\s*[,;]?\s*)+$')


@dataclass
class Compact:
    """What a compact template receives: one formatted line per shown example."""

    lines: list[str]
    scale: float
    n_tokens: int  # corpus tokens shown (after windowing)


def select_examples(examples: Sequence[Pair], n: int, max_same: int | None = None) -> list[Pair]:
    """Up to ``n`` examples, strongest first, for variety: no two identical windows and at
    most ``max_same`` (default ``max(2, n // 2)``) whose peak is the same token, so the
    prompt shows the feature's range rather than eight copies of its favourite context.
    Examples that never fire are left out. If variety runs out, the strongest rest fill up."""
    cap = max(2, n // 2) if max_same is None else max_same
    ranked = sorted((e for e in examples if max(e[1], default=0.0) > 0),
                    key=lambda e: -max(e[1]))
    chosen: list[int] = []
    peaks: Counter[str] = Counter()
    seen: set[tuple[str, ...]] = set()
    for i, (tokens, acts) in enumerate(ranked):
        check_pair(tokens, acts)
        peak = _peak_token(tokens, acts)
        if len(chosen) < n and peaks[peak] < cap and tuple(tokens) not in seen:
            chosen.append(i)
            peaks[peak] += 1
            seen.add(tuple(tokens))
    rest = [i for i in range(len(ranked)) if i not in chosen][: n - len(chosen)]
    return [ranked[i] for i in chosen + rest]


def _peak_token(tokens: Sequence[str], acts: Sequence[float]) -> str:
    i = max(range(len(acts)), key=lambda j: acts[j])
    return tokens[i].strip().lower()


def _windows(examples: Sequence[Pair], n: int, width: int) -> tuple[list[Pair], float]:
    """The selected examples cut to ``width`` tokens around their maximum, and the scale
    (the maximum over what is shown, so the strongest token always reads 10)."""
    shown = []
    for tokens, acts in select_examples(examples, n):
        start, end = context_window(acts, width)
        shown.append((tokens[start:end], acts[start:end]))
    scale = max((max(a) for _, a in shown if len(a)), default=0.0)
    return shown, float(scale)


def _text(token: str, max_chars: int) -> str:
    """A token as running text: sanitised, angle brackets defused (they are our markers)."""
    return sanitize_token(token, max_chars).replace("<", "‹").replace(">", "›")


def delphi_line(tokens: Sequence[str], ints: Sequence[int],
                max_chars: int = MAX_TOKEN_CHARS) -> str:
    """One window as running text with each run of activating tokens marked ``<<…>>``.
    Whitespace at a run's edges goes outside the marker: ``in <<May>>``, not ``in<< May>>``."""
    out: list[str] = []
    run: list[str] = []
    for token, value in zip(tokens, ints, strict=True):
        text = _text(token, max_chars)
        if value > 0:
            run.append(text)
            continue
        if run:
            out.append(_marked("".join(run)))
            run = []
        out.append(text)
    if run:
        out.append(_marked("".join(run)))
    return "".join(out).strip()


def _marked(text: str) -> str:
    core = text.strip()
    if not core:
        return text
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()):]
    return f"{lead}{OPEN}{core}{CLOSE}{trail}"


def pairs_line(tokens: Sequence[str], ints: Sequence[int],
               max_chars: int = MAX_TOKEN_CHARS) -> str:
    """The activating tokens of one window with their activations, in text order."""
    pairs = []
    for token, value in zip(tokens, ints, strict=True):
        if value > 0:
            shown = _text(token, max_chars).strip() or "␣"
            pairs.append('"' + shown.replace('"', '\\"') + f'" ({value})')
    return ", ".join(pairs)


def format_compact(examples: Sequence[Pair], style: str, *, max_examples: int = 8,
                   window: int = 16, max_token_chars: int = MAX_TOKEN_CHARS) -> Compact:
    """``delphi`` or ``pairs`` lines for up to ``max_examples`` diverse examples, each cut
    to ``window`` tokens around its maximum; windows with nothing to mark are dropped."""
    shown, scale = _windows(examples, max_examples, window)
    lines, n_tokens = [], 0
    for tokens, acts in shown:
        ints = normalise(acts, scale)
        if not any(ints):
            continue
        line = (delphi_line(tokens, ints, max_token_chars) if style == "delphi"
                else pairs_line(tokens, ints, max_token_chars))
        lines.append(line)
        n_tokens += len(tokens)
    return Compact(lines, scale, n_tokens)
