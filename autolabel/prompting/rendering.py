"""Render the Jinja2 templates in ``prompts/``: sandboxed, strict, versioned and hashed.

Corpus text is untrusted data. It reaches a prompt only as template *variables* (never as
template source), after the record formatters have neutralised it (see :mod:`.records`).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

from autolabel.errors import AutolabelError
from autolabel.resources import prompts_dir

_VERSION_LINE = re.compile(r"\A\{#\s*version:\s*([\w.\-]+/\d+)\s*#\}")


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
