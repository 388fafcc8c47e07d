"""LLM calls: one ``llm_calls`` row per request (ok or error), which doubles as the cache.

The LLM layer decides *what* to record (request settings, prompt, reply, accounting); this
module is the only place that knows the table. Rows come back as plain :class:`StoredCall`
values so callers never hold ORM objects beyond the session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from autolabel.db import LLMCall


@dataclass(frozen=True)
class StoredCall:
    """What the cache needs from an ``ok`` row to answer a request again."""

    id: int
    response: str | None
    tokens_in: int
    tokens_out: int
    request: dict[str, Any]


@dataclass(frozen=True)
class NewCall:
    """One call to record: the request (never credentials), the reply and its accounting."""

    provider: str
    model: str
    request_hash: str
    request: dict[str, Any]
    prompt: str
    response: str | None
    tokens_in: int
    tokens_out: int
    cost: float
    latency_s: float
    status: str  # ok | error
    error: str | None
    run_id: int | None


def cached_call(session: Session, request_hash: str) -> StoredCall | None:
    """The newest ``ok`` row for this request hash (errors are never answered from cache)."""
    query = (select(LLMCall).where(LLMCall.request_hash == request_hash, LLMCall.status == "ok")
             .order_by(LLMCall.id.desc()).limit(1))
    row = session.scalars(query).first()
    if row is None:
        return None
    return StoredCall(id=int(row.id), response=row.response, tokens_in=row.tokens_in,
                      tokens_out=row.tokens_out, request=dict(row.request or {}))


def add_call(session: Session, call: NewCall) -> int:
    """Insert one ``llm_calls`` row; returns its id (the ``call_id`` explanations cite)."""
    row = LLMCall(
        provider=call.provider, model=call.model, request_hash=call.request_hash,
        request=call.request, prompt=call.prompt, response=call.response,
        tokens_in=call.tokens_in, tokens_out=call.tokens_out, cost=call.cost,
        latency_s=call.latency_s, status=call.status, error=call.error, run_id=call.run_id,
    )
    session.add(row)
    session.flush()
    return int(row.id)
