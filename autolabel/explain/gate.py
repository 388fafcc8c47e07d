"""The quality gate: no candidate becomes ``ok`` unless it describes text, in a sentence a
reviewer would accept.

Every candidate of every explainer and LLM passes here before it can be ``ok``. The reply is
first cleaned (:func:`autolabel.prompting.clean_reply`: labels, quotes, leaked reasoning,
echoed records), then judged by general rules; each rejection stores a short reason code:

- ``loop`` — a generation loop: an n-gram repeated three or more times in a row
  (:func:`autolabel.wording.find_loops`, the same tokenisation the scorers canonicalise with);
- ``empty`` — nothing left after cleaning, or no content word (``the``, ``the 0th``);
- ``echo`` — the reply only repeats the prompt's record formatting;
- ``too_long`` — over ``max_chars`` characters or ``max_words`` words (configurable);
- ``prompt_reference`` — talks about the prompt rather than the feature: a numbered or
  deictic feature/example ("feature 3", "the previous feature", "the following tokens"), the
  prompt's own vocabulary (activations, "(strongest)", markers), or a dangling colon;
- ``incomplete`` — ends mid-phrase ("the same token as the");
- ``copy`` — a near-copy of an explanation that appears in the rendered prompt (few-shot
  answers, quoted examples in the instructions), or one that quotes only tokens such an
  example quotes, unless the feature's own data supports it:
  a copied ``negations such as "not" and "never"`` stands when the feature's activating
  tokens (the prompt's data part, after its last example answer) include "not" or "never".

Quoted spans are data: a feature may fire on the word "feature", and ``the word "feature"``
is a fine label. Refusals and multi-line answers keep their own statuses (``refused``,
``parse_error``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from autolabel.explain.candidate import OK, PARSE_ERROR, REFUSED, REJECTED
from autolabel.llm.base import render_messages
from autolabel.prompting import MAX_EXPLANATION_CHARS, clean_line, clean_reply
from autolabel.wording import find_loops

# Bump when a rule changes: stored candidates are re-judged. 2: borrowed quoted tokens copy.
GATE_VERSION = 2
REASONS = ("empty", "echo", "loop", "too_long", "prompt_reference", "incomplete", "copy")

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
_QUOTED = re.compile(r'"[^"\n]*"|“[^”\n]*”|‘[^’\n]*’|`[^`\n]*`')


def _words_of(text: str) -> frozenset[str]:
    """A word list written as one string, as a set."""
    return frozenset(text.split())


_STOPWORDS = _words_of(
    "a an the of to in on at for with and or as by from that this these those which than is "
    "are was were be it its their there here some any all each every one two word words token "
    "tokens text same other such")
_FUNCTION_END = _words_of(
    "a an the of to in on at for with and or as by from that which than is are was were "
    "be its their")
_ORDINAL = re.compile(r"^\d+(st|nd|rd|th)?$")
_PROMPT_REFERENCE = [
    re.compile(r"\b(features?|neurons?|latents?|examples?|excerpts?|records?|sequences?)"
               r"\s*(#|no\.?|number)?\s*\d+\b", re.I),
    re.compile(r"\b(the|this|that|these|those|previous|next|following|preceding|above|below|"
               r"other|same|another|each|every|first|second|last)\s+"
               r"(features?|neurons?|latents?)\b", re.I),
    re.compile(r"\b(previous|preceding|following|above|below|aforementioned|given|listed|"
               r"shown)\s+(examples?|excerpts?|records?|lists?|prompt|tokens?|words?|texts?|"
               r"lines?)\b", re.I),
    re.compile(r"\b(marked|activating|highlighted)\s+(tokens?|words?)\b|\bactivations?\b|"
               r"\((strongest|none)\)|<<|>>|<start>|<end>", re.I),
    re.compile(r":\s*$"),
]
_PROMPT_ANSWER = re.compile(
    r"^\s*(?:explanation|description|label|answer|assistant)\s*:\s*(.+?)\s*$", re.I | re.M)
_EXAMPLE_QUOTE = re.compile(r'\be\.g\.,?\s*"([^"\n]{3,120})"', re.I)
_MARKED = re.compile(r"<<([^<>\n]*)>>")
_PAIR = re.compile(r'"((?:[^"\\\n]|\\.)*)"\s*\(\d+\)')
_BILLS = re.compile(r"^(.*\S.*)\t(\d+)\s*$", re.M)


@dataclass(frozen=True)
class GateConfig:
    """The gate's knobs (``[explain]`` ``max_chars`` / ``max_words`` in the config)."""

    max_chars: int = 160
    max_words: int = 24
    loop_repeats: int = 3
    copy_similarity: float = 0.8


@dataclass(frozen=True)
class Verdict:
    """The gate's decision on one candidate: status, cleaned text (ok only), reason, detail."""

    status: str
    text: str | None
    reason: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class PromptFacts:
    """What the gate reads from a rendered prompt: the example explanations it shows, and
    the activating tokens of the feature's own data (casefolded)."""

    examples: tuple[str, ...] = ()
    evidence: frozenset[str] = frozenset()


def judge_reply(reply: str | None, prompt: str | Sequence[dict[str, str]] | None = None,
                config: GateConfig | None = None) -> Verdict:
    """Clean an LLM reply and judge it; ``prompt`` (text or chat messages) is what the model
    was shown, so that copies of its example explanations can be recognised."""
    cleaned = clean_reply(reply)
    if cleaned.refused is not None:
        return Verdict(REFUSED, None, None, "the model refused: " + cleaned.refused)
    if len(cleaned.lines) > 1:
        return Verdict(PARSE_ERROR, None, None,
                       f"expected one line, got {len(cleaned.lines)}")
    if not cleaned.lines:
        if cleaned.echoed:
            return _reject("echo", "the reply echoes the prompt's records instead of "
                           "explaining", reply)
        return _reject("empty", "nothing left after cleaning the reply", reply)
    return judge_text(cleaned.lines[0], prompt_facts(prompt), config)


def judge_text(text: str, facts: PromptFacts | None = None,
               config: GateConfig | None = None) -> Verdict:
    """Judge one cleaned explanation against what its prompt showed (``facts``)."""
    cfg = config or GateConfig()
    words = _WORD.findall(text)
    for reason, why in _problems(text, words, facts or PromptFacts(), cfg):
        return _reject(reason, why, text)
    return Verdict(OK, text)


def _problems(text: str, words: list[str], facts: PromptFacts,
              cfg: GateConfig) -> list[tuple[str, str]]:
    """Every rule in order; the first hit is the reason (the list is short, so all run)."""
    found = []
    loops = find_loops(text, min_repeats=cfg.loop_repeats)
    if loops:
        found.append(("loop", f"{loops[0].unit!r} repeated {loops[0].repeats} times"))
    if not any(ch.isalnum() for ch in text) or not _content_words(text):
        found.append(("empty", "no content word"))
    if len(text) > min(cfg.max_chars, MAX_EXPLANATION_CHARS) or len(words) > cfg.max_words:
        found.append(("too_long", f"{len(text)} characters, {len(words)} words (limits "
                      f"{cfg.max_chars} / {cfg.max_words})"))
    reference = _prompt_reference(text)
    if reference:
        found.append(("prompt_reference", f"refers to the prompt ({reference!r}), not to "
                      "what the feature responds to"))
    tail = _WORD.findall(_QUOTED.sub(" QUOTED ", text))  # a quoted token ends nothing
    if tail and tail[-1].lower() in _FUNCTION_END:
        found.append(("incomplete", f"ends mid-phrase ({tail[-1]!r})"))
    copied = _copied(text, facts, cfg.copy_similarity)
    if copied is not None:
        found.append(("copy", f"copies the prompt's example explanation {copied!r}"))
    return found


def _reject(reason: str, why: str, text: str | None) -> Verdict:
    shown = " ".join((text or "").split())
    shown = shown if len(shown) <= 80 else shown[:79] + "…"
    return Verdict(REJECTED, None, reason, f"{reason}: {why}" + (f" — {shown!r}" if shown
                                                                  else ""))


def _content_words(text: str) -> list[str]:
    """What carries meaning: quoted literals (a feature may fire on "at" or "4"), and words
    that are not function words, bare numbers or ordinals."""
    quoted = [q for q in _QUOTED.findall(text) if q.strip("\"“”‘’` ")]
    words = _WORD.findall(_QUOTED.sub(" ", text))
    return quoted + [w for w in words if w.lower() not in _STOPWORDS and not _ORDINAL.match(w)]


def _prompt_reference(text: str) -> str | None:
    """The phrase by which ``text`` refers to the prompt (quoted spans ignored), if any."""
    unquoted = _QUOTED.sub(" ", text)
    for pattern in _PROMPT_REFERENCE:
        match = pattern.search(unquoted)
        if match:
            return match.group(0).strip() or match.group(0)
    return None


def prompt_facts(prompt: str | Sequence[dict[str, str]] | None) -> PromptFacts:
    """The explanations a rendered prompt shows — answers after an ``Explanation:`` /
    ``Description:`` label or in assistant messages, quoted ``e.g. "…"`` examples in the
    instructions; the open answer slot cleans to nothing and is left out — and the activating
    tokens of its data part, the text after the last example answer."""
    if prompt is None:
        return PromptFacts()
    text = prompt if isinstance(prompt, str) else render_messages(list(prompt))
    found, data_from = [], 0
    for match in _PROMPT_ANSWER.finditer(text):
        answer = clean_line(match.group(1))
        if answer:
            found.append(answer)
            data_from = match.end()
    found += [clean_line(m) for m in _EXAMPLE_QUOTE.findall(text)]
    examples = tuple(dict.fromkeys(f for f in found if f))
    return PromptFacts(examples, _activating_tokens(text[data_from:]))


def prompt_explanations(prompt: str | Sequence[dict[str, str]] | None) -> list[str]:
    """The example explanations a rendered prompt shows (see :func:`prompt_facts`)."""
    return list(prompt_facts(prompt).examples)


def _activating_tokens(data: str) -> frozenset[str]:
    """Activating tokens in a prompt's data part, whatever its record format: ``<<marked>>``
    runs (each word), ``"token" (n)`` pairs, Bills ``token<TAB>n`` lines with n > 0."""
    found: list[str] = []
    for run in _MARKED.findall(data):
        found += _WORD.findall(run)
    found += _PAIR.findall(data)
    found += [tok for tok, value in _BILLS.findall(data) if int(value) > 0]
    return frozenset(t.strip().casefold() for t in found if t.strip())


def _copied(text: str, facts: PromptFacts, threshold: float) -> str | None:
    """The example that ``text`` nearly copies (equal or similar word sequences, or one
    containing the other: a copy with a stray word before or after it), or whose quoted
    tokens it borrows (every token it quotes is one the example quotes: ``"not" and
    "never"`` on a feature of closing brackets) — unless one of the example's quoted tokens
    is among the feature's own activating tokens."""
    mine = [w.lower() for w in _WORD.findall(text)]
    quotes = _quoted(text)
    for example in facts.examples:
        theirs = [w.lower() for w in _WORD.findall(example)]
        if not theirs or not mine:
            continue
        similar = SequenceMatcher(None, mine, theirs, autojunk=False).ratio() >= threshold
        contains = len(theirs) >= 3 and _contains(mine, theirs)
        inside = (len(mine) >= 3 and _contains(theirs, mine)
                  and len(mine) >= 0.6 * len(theirs))
        borrowed = bool(quotes) and quotes <= _quoted(example)
        if (similar or contains or inside or borrowed) and not _supported(example,
                                                                          facts.evidence):
            return example
    return None


def _quoted(text: str) -> frozenset[str]:
    """The tokens a text quotes, casefolded, without their quotes."""
    return frozenset(q.strip("\"“”‘’` ").casefold() for q in _QUOTED.findall(text)) - {""}


def _supported(example: str, evidence: frozenset[str]) -> bool:
    """Whether the feature's data shows one of the tokens the example explanation quotes."""
    return bool(_quoted(example) & evidence)


def _contains(seq: list[str], part: list[str]) -> bool:
    n = len(part)
    return any(seq[i:i + n] == part for i in range(len(seq) - n + 1))
