"""Prompts: render the templates in ``prompts/``, format activation records, clean replies.

Corpus text is untrusted data. It reaches a prompt only as template *variables* (never as
template source), after the record formatters have neutralised it; see :mod:`.records` (the
Bills format and the shared escaping), :mod:`.compact` (delphi and pairs formats),
:mod:`.templates` (template families by name and model kind) and :mod:`.parse` (replies).
"""

from __future__ import annotations

from autolabel.prompting.compact import Compact, format_compact, select_examples
from autolabel.prompting.parse import MAX_EXPLANATION_CHARS, Cleaned, clean_line, clean_reply
from autolabel.prompting.records import (
    MAX_CONTEXT_TOKENS,
    MAX_TOKEN_CHARS,
    MAX_TOTAL_TOKENS,
    Record,
    Records,
    context_window,
    format_records,
    normalise,
    sanitize_token,
)
from autolabel.prompting.rendering import (
    render,
    render_messages,
    template_hash,
    template_version,
)
from autolabel.prompting.templates import (
    DEFAULT_FAMILY,
    FAMILIES,
    VARIANTS,
    Family,
    family,
    render_prompt,
    template_context,
)

FORMAT_VERSION = "records/2"  # bump when the Python-side record formatting changes
OK, PARSE_ERROR, REFUSED, ERROR, REJECTED = "ok", "parse_error", "refused", "error", "rejected"

__all__ = [
    "DEFAULT_FAMILY", "ERROR", "FAMILIES", "FORMAT_VERSION", "MAX_CONTEXT_TOKENS",
    "MAX_EXPLANATION_CHARS", "MAX_TOKEN_CHARS", "MAX_TOTAL_TOKENS", "OK", "PARSE_ERROR",
    "REFUSED", "REJECTED", "VARIANTS", "Cleaned", "Compact", "Family", "Record", "Records",
    "clean_line", "clean_reply", "context_window", "family", "format_compact",
    "format_records", "normalise", "render", "render_messages", "render_prompt",
    "sanitize_token", "select_examples", "template_context", "template_hash",
    "template_version",
]
