"""An explanation's wording, canonicalised: loops and repeated words collapsed, so that a score
measures what a label says, never how often it says it.

Issue 13: the offline embedding simulator scored the generation loop ``the 0th month of the
month of the month …`` above a plain token-statistics label, because repeating a word pulls an
embedding towards it. Every scorer passes the explanation through :func:`canonical_explanation`
before any simulator sees it, so a label, the same label with its words repeated, and the same
label padded with a loop of words it already contains all reach the simulator as one text.

The quality gate (explain side) uses :func:`find_loops` on the same tokenisation to reject
degenerate candidates, so "what counts as a loop" is defined once, here.

The rules, all on a tokenisation into words, quoted literals and single punctuation marks:

1. a run of two or more consecutive copies of the same n-gram (n ≤ :data:`MAX_UNIT`, compared
   exactly, so a list of case variants such as ``"among", "Among"`` is not a repeat) is one
   copy; a truncated copy ending the text (a loop cut off by the token limit) goes too;
2. a collapsed loop (a unit of several tokens, or one token three or more times) whose words
   all occurred before it (ignoring case) adds nothing and is dropped (``tokens "among",
   "Among" among Among among Among`` is ``tokens "among", "Among"``); a doubled word (``the
   the``) keeps its one copy, since prose repeats words like "the" all the time;
3. whitespace is normalised; everything else is kept exactly as written.

Ordinary prose has no consecutive repeats, so it passes through unchanged (tested).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_UNIT = 40  # longest repeated n-gram looked for (in tokens): a whole one-line label
# A quoted literal ("among", " Among", “x”) is one token, inner spaces included: token labels
# list " Among" and "Among" as different tokens, and a loop of "the","the" repeats a literal.
_TOKEN = re.compile(r'"[^"\n]{1,40}"|“[^”\n]{1,40}”|\w+|[^\w\s]', re.UNICODE)


@dataclass(frozen=True)
class Token:
    """One word or punctuation mark of a text, with its position (``start``) in the text."""

    text: str
    start: int
    space_before: bool  # whether whitespace separates it from the previous token

    @property
    def key(self) -> str:
        """What repeats are compared on: the exact text."""
        return self.text

    @property
    def word_key(self) -> str:
        """What "already said" is compared on: the word (a literal without its quotes and
        spaces), ignoring case."""
        return self.text.strip('"“” ').casefold()

    @property
    def is_word(self) -> bool:
        """A word or quoted literal with a letter or digit, as opposed to punctuation."""
        return any(c.isalnum() for c in self.text)


@dataclass(frozen=True)
class Loop:
    """A run of consecutive copies of one n-gram: ``unit`` repeated ``repeats`` times.

    ``start`` and ``length`` are token positions in :func:`tokens` of the text; ``length``
    covers the full copies and a truncated trailing copy, if any.
    """

    unit: str
    repeats: int
    start: int
    length: int


def tokens(text: str) -> list[Token]:
    """``text`` as words, quoted literals and single punctuation marks (the unit of every
    rule here)."""
    out: list[Token] = []
    end = 0
    for match in _TOKEN.finditer(text):
        out.append(Token(match.group(0), match.start(), match.start() > end or not out))
        end = match.end()
    return out


def find_loops(text: str, min_repeats: int = 2) -> list[Loop]:
    """Every run of ``min_repeats`` or more consecutive copies of one n-gram, left to right.

    Runs do not overlap; at each position the run covering most tokens wins (``the 0th month
    of the month of the month`` is ``month of the`` twice, then a cut-off copy). A quality
    gate calls this with ``min_repeats=3`` to find generation loops.
    """
    toks = tokens(text)
    keys = [t.key for t in toks]
    loops: list[Loop] = []
    i = 0
    while i < len(keys):
        run = _widest_run(keys, i, min_repeats)
        if run is None:
            i += 1
            continue
        start, n, reps = run
        end, _clean = _reach(keys, run)
        loops.append(Loop(_join(toks[start:start + n]), reps, start, end - start))
        i = end
    return loops


def _widest_run(keys: list[str], i: int, min_repeats: int) -> tuple[int, int, int] | None:
    """(i, n, repeats) of the run from ``i`` with ≥ ``min_repeats`` copies covering most
    tokens; None when there is none."""
    best: tuple[int, int, int] | None = None
    for n in range(1, MAX_UNIT + 1):
        reps = _run_of(keys, i, n)
        if reps >= min_repeats and (best is None or n * reps > best[1] * best[2]):
            best = (i, n, reps)
    return best


def canonical_explanation(text: str) -> str:
    """The wording every scorer sees: loops and repeated words collapsed, padding that only
    repeats earlier words dropped, whitespace normalised (module docstring: the rules)."""
    current = " ".join(text.split())
    for _ in range(8):  # collapsing can make new neighbours equal; a few passes settle it
        collapsed = _collapse_once(current)
        if collapsed == current:
            break
        current = collapsed
    return current


def _collapse_once(text: str) -> str:
    """One pass of rules 1 and 2 over ``text``."""
    toks = tokens(text)
    keys = [t.key for t in toks]
    kept: list[Token] = []
    i = 0
    while i < len(toks):
        run = _best_run(keys, i)
        if run is None:
            kept.append(toks[i])
            i += 1
            continue
        start, n, reps = run
        kept.extend(toks[i:start])
        seen = {t.word_key for t in kept if t.is_word}
        unit = toks[start:start + n]
        padding = reps >= 3 or n >= 2  # a loop, not a doubled word ("the the")
        if not (padding and kept and all(t.word_key in seen for t in unit if t.is_word)):
            kept.extend(unit)
        i = start + n * reps
        i += _truncated_copy(keys, i, keys[start:start + n])
    return _join(kept)


def _best_run(keys: list[str], i: int) -> tuple[int, int, int] | None:
    """(start, n, repeats) of the run at ``i`` (repeats ≥ 2), or None when none starts there.

    The shortest repeating unit wins (``the the month month`` collapses word by word before
    any longer loop is looked for; later passes catch those). A rotation of the same unit
    starting a little later that reaches further (or as far, ending on a whole copy) replaces
    it: that is the loop's natural phase. A label ending in ``"Among"`` and padded with
    ``" among" " Among" "Among"`` twice keeps its own last word: the padding is the rotation
    that ends on a whole copy.
    """
    first = _run_at(keys, i)
    if first is None:
        return None
    n = first[0]
    best, rank = (i, *first), _reach(keys, (i, *first))
    for j in range(i + 1, i + n):
        later = _run_of(keys, j, n)
        if later >= 2 and _reach(keys, (j, n, later)) > rank:
            best, rank = (j, n, later), _reach(keys, (j, n, later))
    return best


def _reach(keys: list[str], run: tuple[int, int, int]) -> tuple[int, bool]:
    """How far a run reaches (a cut-off copy ending the text included), and whether it ends
    on a whole copy."""
    start, n, reps = run
    end = start + n * reps
    tail = _truncated_copy(keys, end, keys[start:start + n])
    return end + tail, tail == 0


def _run_at(keys: list[str], i: int) -> tuple[int, int] | None:
    """(n, repeats) of the shortest unit repeated ≥ 2 times from ``i``."""
    for n in range(1, min(MAX_UNIT, (len(keys) - i) // 2) + 1):
        reps = _run_of(keys, i, n)
        if reps >= 2:
            return n, reps
    return None


def _run_of(keys: list[str], i: int, n: int) -> int:
    """How many consecutive copies of ``keys[i:i+n]`` start at ``i``."""
    unit, reps = keys[i:i + n], 1
    while keys[i + reps * n:i + (reps + 1) * n] == unit:
        reps += 1
    return reps


def _truncated_copy(keys: list[str], at: int, unit: list[str]) -> int:
    """How many tokens at ``at`` are a cut-off copy of ``unit`` ending the text (a loop stopped
    by the token limit, possibly mid-word); 0 when the text goes on with something else."""
    rest = keys[at:]
    if not 0 < len(rest) <= len(unit):
        return 0
    whole, last = rest[:-1], rest[-1]
    if unit[:len(whole)] == whole and unit[len(whole)].startswith(last) and rest != unit:
        return len(rest)
    return 0


def _join(toks: list[Token]) -> str:
    """Tokens back to text, keeping where the original had spaces."""
    parts: list[str] = []
    for k, tok in enumerate(toks):
        if k and tok.space_before:
            parts.append(" ")
        parts.append(tok.text)
    return "".join(parts)
