"""The one LLM interface: the :class:`LLMClient` protocol, the reply types, request hashing.

Explainers and scorers talk to an :class:`LLMClient`; which backend answers (a server, a model
in this process, a scripted fake) is a config choice made in :mod:`autolabel.llm.factory`.
The protocol states explicitly what callers may ask a client — including the in-process model
behind it (:meth:`LLMClient.local_backend`) and whether its circuit breaker is open
(:attr:`LLMClient.breaker_open`) — so no caller has to look inside a wrapper.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from autolabel.llm.local import LocalClient

T = TypeVar("T")


@dataclass
class TokenLogprob:
    """One prompt token with its log-probability given the tokens before it."""

    token: str
    logprob: float | None  # None for the first prompt token: nothing precedes it
    top: dict[str, float] = field(default_factory=dict)  # alternatives: token text -> logprob


@dataclass
class Completion:
    """A reply plus the accounting every caller needs (tokens, cost, latency, provenance)."""

    text: str
    tokens_in: int
    tokens_out: int
    cost: float
    latency_s: float
    cached: bool = False
    call_id: int | None = None  # llm_calls row id when recorded
    finish_reason: str | None = None
    prompt_logprobs: list[TokenLogprob] | None = None  # echo + logprobs, when asked for


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; scorers pick all-at-once simulation only when echo works."""

    chat: bool
    completions: bool
    echo_logprobs: bool
    max_top_logprobs: int


class LLMClient(Protocol):
    """The one interface explainers and scorers use, whatever answers behind it."""

    provider: str  # "openai" | "local" | "fake"
    model: str

    def capabilities(self) -> Capabilities: ...

    def complete(
        self, prompt: str, *, max_tokens: int = 64, temperature: float = 0.0,
        stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> Completion: ...

    def chat(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int = 64,
        temperature: float = 0.0, stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> Completion: ...

    def prompt_logprobs(self, prompt: str, *, top_logprobs: int = 20) -> Completion: ...

    def complete_many(
        self, prompts: Sequence[str], *, max_tokens: int = 64, temperature: float = 0.0,
        stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> list[Completion]: ...

    def local_backend(self) -> LocalClient | None:
        """The in-process model answering this client (for the KV-prefix simulator), or None
        for servers and fakes. Asking does not load the model."""
        ...

    @property
    def breaker_open(self) -> bool:
        """True once the backend's circuit breaker opened: every further call would fail."""
        ...


def request_hash(provider: str, model: str, method: str, payload: Mapping[str, Any]) -> str:
    """sha256 over a canonical JSON of the request: the cache key of ``llm_calls``."""
    blob = json.dumps(
        {"provider": provider, "model": model, "method": method, "payload": payload},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def render_messages(messages: Sequence[Mapping[str, str]]) -> str:
    """A plain-text rendering of chat messages: stored as the prompt, and the local fallback
    when a tokenizer has no chat template (the offline Gemma base model has none)."""
    return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages)


def settings_of(
    max_tokens: int, temperature: float, stop: Sequence[str] | None, seed: int | None
) -> dict[str, Any]:
    """Generation settings in the one shape used for hashing and storing."""
    return {"max_tokens": max_tokens, "temperature": temperature,
            "stop": list(stop) if stop else None, "seed": seed}


def first_line(exc: BaseException) -> str:
    """An error's first line (at most 300 characters): what error messages and rows quote."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def run_concurrently(tasks: Sequence[Callable[[], T]], workers: int) -> list[T]:
    """Run every task (``workers`` at a time), then raise the first error in task order.

    Every task runs even when one fails, so a recording wrapper saves all the work that did
    succeed before the batch reports its failure.
    """
    if workers <= 1 or len(tasks) <= 1:
        outcomes = [_outcome(task) for task in tasks]
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
            outcomes = list(pool.map(_outcome, tasks))
    for _value, error in outcomes:
        if error is not None:
            raise error
    return [value for value, _ in outcomes]  # type: ignore[misc]


def _outcome(task: Callable[[], T]) -> tuple[T | None, Exception | None]:
    """A task's value or its exception, so one failure does not cancel the others."""
    try:
        return task(), None
    except Exception as exc:
        return None, exc
