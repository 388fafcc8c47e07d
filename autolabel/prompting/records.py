"""Activation records in the Bills et al. (2023) format, and the helpers every format shares.

Corpus tokens pass :func:`sanitize_token` before they reach any prompt: control characters
become visible escapes, template markers (``{{``, ``{%``, ``{#``) are broken up and chat-special
tokens (``<|im_start|>``, ``<start_of_turn>``, ``<bos>`` …) are defused, so a tokenizer cannot
turn them into real control tokens. Lengths are capped per token, per context and in total.

The Bills format is ``token<TAB>activation`` per line, activations normalised to integers 0–10
by the maximum over the shown examples, the non-zero lines repeated in a separate list when
fewer than 20% of the shown tokens are non-zero. Every token line ends in ``<TAB><integer>``,
so no token can forge a delimiter line such as ``<end>``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

from autolabel.errors import AutolabelError

SPARSE_FRACTION = 0.2  # repeat non-zero lines when fewer than this fraction is non-zero
MAX_TOKEN_CHARS = 24
MAX_CONTEXT_TOKENS = 64
MAX_TOTAL_TOKENS = 640

Pair = tuple[Sequence[str], Sequence[float]]  # (tokens, activations) of one example

SPECIAL_TOKEN = re.compile(
    r"<\|[^<>\n]{0,40}?\|>"  # <|im_start|>, <|endoftext|>, <|eot_id|>
    r"|</?[A-Za-z_][\w\-]{0,40}>"  # <start_of_turn>, <bos>, <s>, </s>, <unused0>
    r"|\[/?INST\]|\[@BOS@\]"
)
_TEMPLATE_MARKERS = {"{{": "{ {", "}}": "} }", "{%": "{ %", "%}": "% }", "{#": "{ #", "#}": "# }"}
_CONTROL_NAMES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
BILLS_LINE = re.compile(r"\S[^\t]*\t\d+\s*$")  # what an echoed Bills record line looks like


def normalise(acts: Sequence[float], scale: float, top: int = 10) -> list[int]:
    """Activations as integers 0..top relative to ``scale`` (round half up; negatives → 0).

    A non-positive or non-finite scale means nothing fired: every value is 0.
    """
    if not math.isfinite(scale) or scale <= 0:
        return [0] * len(acts)
    out = []
    for a in acts:
        value = a / scale * top if math.isfinite(a) else 0.0
        out.append(min(top, max(0, math.floor(value + 0.5))))
    return out


def sanitize_token(token: str, max_chars: int = MAX_TOKEN_CHARS) -> str:
    """One corpus token made safe to print in a prompt.

    Whitespace controls become visible escapes (``\\n``), other control/format characters
    (including bidi overrides and zero-width characters) become ``\\uXXXX``, template markers
    are split, and chat-special tokens get their angle brackets swapped for ``‹ ›``.
    """
    chars = []
    for ch in token:
        if ch in _CONTROL_NAMES:
            chars.append(_CONTROL_NAMES[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
            chars.append(f"\\u{ord(ch):04x}")
        else:
            chars.append(ch)
    text = "".join(chars)
    text = SPECIAL_TOKEN.sub(lambda m: "‹" + m.group(0)[1:-1] + "›", text)
    for marker, safe in _TEMPLATE_MARKERS.items():
        text = text.replace(marker, safe)
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return text


def context_window(acts: Sequence[float], width: int) -> tuple[int, int]:
    """[start, end) of at most ``width`` tokens around the peak, ~3/4 of it before the peak:
    what precedes a firing token is usually what explains it."""
    n = len(acts)
    if n <= width:
        return 0, n
    peak = max(range(n), key=lambda i: acts[i])
    start = max(0, min(peak - (3 * width) // 4, n - width))
    return start, start + width


def check_pair(tokens: Sequence[str], acts: Sequence[float]) -> None:
    """An example's tokens and activations must align (else the collection is corrupt)."""
    if len(tokens) != len(acts):
        raise AutolabelError(f"an example has {len(tokens)} tokens but {len(acts)} "
                             "activations; re-run collection")


@dataclass
class Record:
    """One shown context: ``token<TAB>int`` lines, and the non-zero ones when sparse."""

    lines: list[str]
    activating: list[str] = field(default_factory=list)


@dataclass
class Records:
    """What a template receives: the records, whether the sparse list is shown, the scale."""

    records: list[Record]
    sparse: bool
    scale: float
    n_tokens: int


def format_records(
    examples: Sequence[Pair],
    *,
    max_examples: int = 10,
    max_context_tokens: int = MAX_CONTEXT_TOKENS,
    max_total_tokens: int = MAX_TOTAL_TOKENS,
    max_token_chars: int = MAX_TOKEN_CHARS,
) -> Records:
    """Turn (tokens, activations) pairs into capped, sanitised, normalised Bills records.

    The scale is the maximum over the *shown* windows, so the top example always has a 10.
    """
    windows: list[Pair] = []
    budget = max_total_tokens
    for tokens, acts in list(examples)[:max_examples]:
        check_pair(tokens, acts)
        if budget <= 0:
            break
        start, end = context_window(acts, min(max_context_tokens, budget))
        if end <= start:
            continue  # an empty example
        windows.append((tokens[start:end], acts[start:end]))
        budget -= end - start
    scale = max((max(a) for _, a in windows if len(a)), default=0.0)
    records, nonzero, total = [], 0, 0
    for tokens, acts in windows:
        ints = normalise(acts, scale)
        lines = [f"{sanitize_token(t, max_token_chars)}\t{v}"
                 for t, v in zip(tokens, ints, strict=True)]
        records.append(Record(lines, [ln for ln, v in zip(lines, ints, strict=True) if v > 0]))
        nonzero += sum(1 for v in ints if v > 0)
        total += len(ints)
    sparse = total > 0 and nonzero / total < SPARSE_FRACTION
    if not sparse:
        for r in records:
            r.activating = []
    return Records(records, sparse, float(scale), total)
