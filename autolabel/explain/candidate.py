"""The one shape every explainer returns: a :class:`Candidate`, as stored in ``explanations``.

A failure is a status with the raw reply and an error message, never text posing as an
explanation; a candidate the quality gate turned down is ``rejected`` with a short ``reason``
code (see :mod:`autolabel.explain.gate`), its raw reply kept for review.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OK, PARSE_ERROR, REFUSED, ERROR, REJECTED = "ok", "parse_error", "refused", "error", "rejected"
STATUSES = (OK, PARSE_ERROR, REFUSED, ERROR, REJECTED)


@dataclass
class Candidate:
    """One explanation candidate as stored in ``explanations`` (see DESIGN §3)."""

    explainer: str
    text: str | None
    status: str  # ok | parse_error | refused | error | rejected
    error: str | None
    raw_reply: str | None
    llm_model: str
    prompt_hash: str
    candidate: int
    call_id: int | None
    settings: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None  # the gate's reason code when rejected
    gate_version: int | None = None  # the gate that judged it (None: not judged)
