"""Render the prompt templates in ``prompts/``, format activation records, parse replies.

Corpus text is untrusted data. It reaches a prompt only as template *variables* (never as
template source), one token per line after :func:`sanitize_token` has escaped control
characters, broken up template markers (``{{``, ``{%``, ``{#``) and defused chat-special tokens
(``<|im_start|>``, ``<start_of_turn>``, ``<bos>`` …) that a tokenizer would otherwise turn into
real control tokens. Every token line ends in ``<TAB><integer>``, so no token can forge a
delimiter line such as ``<end>``; lengths are capped per token, per context and in total.

Activation records follow Bills et al. (2023): ``token<TAB>activation`` per line, activations
normalised to integers 0–10 by the maximum over the shown examples, and the non-zero lines
repeated in a separate list when fewer than 20% of the shown tokens are non-zero.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

from autolabel.errors import AutolabelError
from autolabel.resources import prompts_dir

FORMAT_VERSION = "records/1"  # bump when the Python-side record formatting changes
SPARSE_FRACTION = 0.2  # repeat non-zero lines when fewer than this fraction is non-zero
MAX_TOKEN_CHARS = 24
MAX_CONTEXT_TOKENS = 64
MAX_TOTAL_TOKENS = 640
MAX_EXPLANATION_CHARS = 300

OK, PARSE_ERROR, REFUSED, ERROR = "ok", "parse_error", "refused", "error"

_VERSION_LINE = re.compile(r"\A\{#\s*version:\s*([\w.\-]+/\d+)\s*#\}")
_SPECIAL_TOKEN = re.compile(
    r"<\|[^<>\n]{0,40}?\|>"  # <|im_start|>, <|endoftext|>, <|eot_id|>
    r"|</?[A-Za-z_][\w\-]{0,40}>"  # <start_of_turn>, <bos>, <s>, </s>, <unused0>
    r"|\[/?INST\]|\[@BOS@\]"
)
_TEMPLATE_MARKERS = {"{{": "{ {", "}}": "} }", "{%": "{ %", "%}": "% }", "{#": "{ #", "#}": "# }"}
_CONTROL_NAMES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


# --------------------------------------------------------------------------- rendering


@lru_cache(maxsize=1)
def _environment() -> SandboxedEnvironment:
    """One sandboxed environment: templates may not reach Python internals, and a missing
    variable is an error rather than a silently empty prompt."""
    return SandboxedEnvironment(
        loader=FileSystemLoader(str(prompts_dir())),
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def render(template_name: str, **context: Any) -> str:
    """Render a template from ``prompts/``; corpus text must arrive sanitised in ``context``."""
    try:
        template = _environment().get_template(template_name)
    except TemplateNotFound as exc:
        raise AutolabelError(
            f"prompt template {template_name!r} not found in {prompts_dir()}; "
            "reinstall autolabel or check the template name"
        ) from exc
    return template.render(**context)


def render_messages(template_name: str, **context: Any) -> list[dict[str, str]]:
    """Render a chat template (a JSON list of ``{"role", "content"}``) into chat messages.

    Chat templates build the list with Jinja's ``tojson`` filter, so corpus text inside a
    message is JSON-escaped and cannot break out of its message or invent a new role.
    """
    text = render(template_name, **context)
    try:
        messages = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AutolabelError(
            f"chat template {template_name!r} did not render a JSON message list ({exc}); "
            "fix the template"
        ) from exc
    if not isinstance(messages, list) or not all(_is_message(m) for m in messages):
        raise AutolabelError(
            f"chat template {template_name!r} must render a list of "
            '{"role": ..., "content": ...} objects; fix the template'
        )
    return messages


def _is_message(item: object) -> bool:
    return (
        isinstance(item, dict)
        and set(item) == {"role", "content"}
        and item["role"] in ("system", "user", "assistant")
        and isinstance(item["content"], str)
    )


def template_hash(name: str) -> str:
    """sha256 of the template file's bytes: stored with each explanation as provenance."""
    path = prompts_dir() / name
    if not path.is_file():
        raise AutolabelError(f"prompt template {name!r} not found in {prompts_dir()}; "
                             "reinstall autolabel or check the template name")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def template_version(name: str) -> str:
    """The ``{# version: name/n #}`` line every template starts with (see prompts/README.md)."""
    text = (prompts_dir() / name).read_text(encoding="utf-8")
    match = _VERSION_LINE.match(text)
    if not match:
        raise AutolabelError(f"prompt template {name!r} lacks its first line "
                             "'{# version: <name>/<n> #}'; add it (see prompts/README.md)")
    return match.group(1)


# --------------------------------------------------------------------------- records


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
    """One corpus token made safe to print on its own prompt line.

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
    text = _SPECIAL_TOKEN.sub(lambda m: "‹" + m.group(0)[1:-1] + "›", text)
    for marker, safe in _TEMPLATE_MARKERS.items():
        text = text.replace(marker, safe)
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return text


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


def context_window(acts: Sequence[float], width: int) -> tuple[int, int]:
    """[start, end) of at most ``width`` tokens around the peak, ~3/4 of it before the peak:
    what precedes a firing token is usually what explains it."""
    n = len(acts)
    if n <= width:
        return 0, n
    peak = max(range(n), key=lambda i: acts[i])
    start = max(0, min(peak - (3 * width) // 4, n - width))
    return start, start + width


def format_records(
    examples: Sequence[tuple[Sequence[str], Sequence[float]]],
    *,
    max_examples: int = 10,
    max_context_tokens: int = MAX_CONTEXT_TOKENS,
    max_total_tokens: int = MAX_TOTAL_TOKENS,
    max_token_chars: int = MAX_TOKEN_CHARS,
) -> Records:
    """Turn (tokens, activations) pairs into capped, sanitised, normalised records.

    The scale is the maximum over the *shown* windows, so the top example always has a 10.
    """
    windows: list[tuple[Sequence[str], Sequence[float]]] = []
    budget = max_total_tokens
    for tokens, acts in list(examples)[:max_examples]:
        if len(tokens) != len(acts):
            raise AutolabelError(f"an example has {len(tokens)} tokens but {len(acts)} "
                                 "activations; re-run collection")
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


# --------------------------------------------------------------------------- parsing

_REFUSAL = re.compile(
    r"^\W*(i\s+(cannot|can\s*not|can't|can’t|am\s+unable|'m\s+unable|’m\s+unable|won't|"
    r"am\s+not\s+able|'m\s+not\s+able|apologi[sz]e)|as\s+an\s+ai|i'?m\s+sorry|sorry,|"
    r"unfortunately,?\s+i)",
    re.IGNORECASE,
)
_LABEL = re.compile(
    r"^\s*(\*\*)?(explanation( of (feature|neuron) \d+( behaviou?r)?)?|answer|description)"
    r"\s*(\*\*)?\s*[:\-–]\s*(\*\*)?\s*",
    re.IGNORECASE,
)
_PREAMBLE = re.compile(
    r"^(the main thing this (feature|neuron) does is (to )?(find|detect)\s+|"
    r"(this|the) (feature|neuron|latent) (mainly |mostly |primarily )?"
    r"(fires|activates|responds|is active) (on|for|to|when)\s+|"
    r"(fires|activates) on\s+)",
    re.IGNORECASE,
)
_RECORD_LINE = re.compile(r"\S[^\t]*\t\d+\s*$")
_QUOTES = "\"'“”‘’`"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“(])")
_ABBREVIATION = re.compile(r"(\b[A-Za-z]|\be\.g|\bi\.e|\betc|\bvs|\bMrs?|\bDr|\bSt|\bNo)\.$")


def parse_explanation(reply: str) -> tuple[str, str | None, str | None]:
    """(status, text, error) from an LLM reply; failures are statuses, never fake text.

    Accepts one line (optionally labelled "Explanation:") and keeps its first sentence,
    stripped of quotes and "the feature fires on"-style preambles. Refusals → ``refused``;
    empty, over-long, multi-line, letterless, or record-echoing replies → ``parse_error``.
    """
    text = (reply or "").strip()
    if _REFUSAL.match(text):
        return REFUSED, None, "the model refused: " + _first_line(text)[:120]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines and _LABEL.sub("", lines[0]).strip(" *") == "":
        lines = lines[1:]  # "Explanation:" alone on the first line
    if not lines:
        return PARSE_ERROR, None, "empty reply"
    if any(_RECORD_LINE.match(ln) or ln in ("<start>", "<end>") for ln in lines):
        return PARSE_ERROR, None, "the reply echoes activation records instead of explaining"
    if len(lines) > 1:
        return PARSE_ERROR, None, f"expected one line, got {len(lines)}"
    sentence = _clean(lines[0])
    if not sentence or not any(ch.isalpha() for ch in sentence):
        return PARSE_ERROR, None, "no explanation text in the reply"
    if len(sentence) > MAX_EXPLANATION_CHARS:
        return PARSE_ERROR, None, f"explanation longer than {MAX_EXPLANATION_CHARS} characters"
    return OK, sentence, None


def _clean(line: str) -> str:
    """Strip label, wrapping quotes/markdown and preamble; keep the first sentence."""
    text = _unquote(_LABEL.sub("", line).strip().strip("*").strip())
    text = _PREAMBLE.sub("", text).strip()
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
