"""Clean what real LLM servers send back into candidate explanation lines.

Servers wrap a one-line explanation in many ways: a leading "Explanation:" or "**Answer:**",
quotes, markdown, code fences, leaked reasoning (``<think>…</think>``, a reasoning channel, a
"Final answer:" after a chain of thought), and echoes of the prompt's own record formatting.
:func:`clean_reply` strips all of that by general rules and reports what it dropped; judging the
remaining text (empty, a loop, a copy of the prompt …) is the quality gate's job
(:mod:`autolabel.explain.gate`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from autolabel.prompting.compact import MARKED, PAIRS_LINE
from autolabel.prompting.records import BILLS_LINE

MAX_EXPLANATION_CHARS = 300  # hard cap on any explanation text a simulator is shown

_REASONING_BLOCK = re.compile(
    r"<(think|thinking|reasoning|reason|analysis|thought|scratchpad)>.*?</\1>", re.I | re.S)
_REASONING_OPEN = re.compile(
    r"<(think|thinking|reasoning|reason|analysis|thought|scratchpad)>.*\Z", re.I | re.S)
_CHANNEL_FINAL = re.compile(r"<\|channel\|>\s*final\s*<\|message\|>(.*)\Z", re.I | re.S)
_SPECIAL = re.compile(r"<\|[^<>\n]{0,40}?\|>|</?(?:s|eos|bos|end_of_turn|start_of_turn)>")
_FINAL_LABEL = re.compile(r"^\W*(final\s+answer|final\s+explanation|answer)\s*[:\-–]\s*", re.I)
_REFUSAL = re.compile(
    r"^\W*(i\s+(cannot|can\s*not|can't|can’t|am\s+unable|'m\s+unable|’m\s+unable|won't|"
    r"am\s+not\s+able|'m\s+not\s+able|apologi[sz]e)|as\s+an\s+ai|i'?m\s+sorry|sorry,|"
    r"unfortunately,?\s+i)",
    re.IGNORECASE,
)
_LABEL = re.compile(
    r"^\s*(\*\*)?(explanation( of (feature|neuron|latent) \d+( behaviou?r)?)?|answer|"
    r"final answer|description|label|summary|feature \d+)"
    r"\s*(\*\*)?\s*[:\-–]\s*(\*\*)?\s*",
    re.IGNORECASE,
)
_PREAMBLE = re.compile(
    r"^(the main thing this (feature|neuron) does is (to )?(find|detect)\s+|"
    r"(this|the) (feature|neuron|latent) (mainly |mostly |primarily )?"
    r"(fires|activates|responds|is active) (on|for|to|when)(\s+|$)|"
    r"(fires|activates) on(\s+|$)|"
    r"(the |all the |all )?(marked|activating|highlighted) (tokens|words|parts) "
    r"(are|is)( all)?(\s+about)?(\s+|$))",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_SCAFFOLD = re.compile(r"^(feature \d+|excerpts?:?|examples?:?|activating tokens:?|"
                       r"tokens:?|<start>|<end>|```\w*)$", re.I)
_QUOTES = "\"'“”‘’`"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“(])")
_ABBREVIATION = re.compile(r"(\b[A-Za-z]|\be\.g|\bi\.e|\betc|\bvs|\bMrs?|\bDr|\bSt|\bNo)\.$")


@dataclass
class Cleaned:
    """A reply reduced to its candidate lines, and what was dropped on the way."""

    lines: list[str]
    echoed: int = 0  # lines that echoed the prompt's records or scaffolding
    reasoning: bool = False  # leaked reasoning was removed
    refused: str | None = None  # the refusal line, when the model refused
    notes: list[str] = field(default_factory=list)


def clean_reply(reply: str | None) -> Cleaned:
    """Strip reasoning, markdown, labels, quotes, preambles and echoed records from a reply;
    each remaining line is cut to its first sentence."""
    text, reasoning = strip_reasoning(reply or "")
    if _REFUSAL.match(text.strip()):
        return Cleaned([], reasoning=reasoning, refused=_first_line(text.strip())[:120])
    lines, echoed = [], 0
    for raw in text.splitlines():
        line = _BULLET.sub("", raw.strip().strip("*").strip()) if raw.strip() else ""
        if not line:
            continue
        if is_echo_line(line):
            echoed += 1
            continue
        lines.append(line)
    lines = _after_final_label(lines)
    if lines and _LABEL.sub("", lines[0]).strip(" *") == "":
        lines = lines[1:]  # "Explanation:" alone on the first line
    cleaned = [c for c in (clean_line(ln) for ln in lines) if c]
    return Cleaned(cleaned, echoed=echoed, reasoning=reasoning)


def strip_reasoning(text: str) -> tuple[str, bool]:
    """Remove leaked reasoning: tagged blocks (closed or cut off), a reasoning channel before
    a final one, and stray chat-special tokens. Returns the text and whether any was found."""
    found = False
    final = _CHANNEL_FINAL.search(text)
    if final:
        text, found = final.group(1), True
    stripped = _REASONING_OPEN.sub("", _REASONING_BLOCK.sub("", text))
    found = found or stripped != text
    return _SPECIAL.sub("", stripped), found


def _after_final_label(lines: list[str]) -> list[str]:
    """After a chain of thought, only what follows the last "Final answer:" counts."""
    for i in range(len(lines) - 1, -1, -1):
        if _FINAL_LABEL.match(lines[i]):
            rest = _FINAL_LABEL.sub("", lines[i]).strip()
            return ([rest] if rest else []) + lines[i + 1:]
    return lines


def is_echo_line(line: str) -> bool:
    """Whether a reply line repeats the prompt's formatting rather than explaining: a Bills
    ``token<TAB>n`` line, a pairs list, a delphi excerpt (marked text of six or more words),
    or a scaffold line (``<start>``, ``Feature 4``, ``Excerpts:``)."""
    stripped = line.strip()
    if BILLS_LINE.match(stripped) or PAIRS_LINE.match(stripped) or _SCAFFOLD.match(stripped):
        return True
    if MARKED.search(stripped):
        return len(MARKED.sub(" ", stripped).split()) >= 6
    return False


def clean_line(line: str) -> str:
    """One line → its explanation: label, wrapping quotes/markdown, preamble and markers
    stripped, first sentence kept, trailing period dropped."""
    text = _unquote(_LABEL.sub("", line).strip().strip("*").strip())
    text = _PREAMBLE.sub("", text).strip()
    text = MARKED.sub(lambda m: '"' + m.group(1).strip() + '"', text)
    text = _first_sentence(text)
    return _unquote(text.rstrip(".").strip())


def _unquote(text: str) -> str:
    """Drop quotes wrapping the whole text, but keep quoted tokens: '"not" and "n't"'."""
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        inner = text[1:-1]
        if not any(q in inner for q in '"“”`'):
            return inner.strip()
    return text


def _first_sentence(text: str) -> str:
    """Text up to the first sentence break that does not follow an abbreviation ("e.g.")."""
    for match in _SENTENCE_END.finditer(text):
        if not _ABBREVIATION.search(text[: match.start()]):
            return text[: match.start()].strip()
    return text


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""
