"""A scripted fake client for tests (in the style of simonw/llm's ``MockModel.enqueue``)."""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from autolabel.errors import LLMError
from autolabel.llm.base import (
    Capabilities,
    Completion,
    TokenLogprob,
    render_messages,
    settings_of,
)


def _word_count(text: str) -> int:
    return len(text.split())


def word_logprobs(prompt: str) -> list[TokenLogprob]:
    """The fake's default prompt-logprob table: whitespace-led words, each at logprob -1."""
    words = re.findall(r"\s*\S+", prompt) or [prompt]
    return [TokenLogprob(w, None if i == 0 else -1.0, {} if i == 0 else {w: -1.0})
            for i, w in enumerate(words)]


class FakeClient:
    """Answers from a queue of scripted replies; records every prompt it was sent.

    A queued ``Exception`` is raised in its turn (to script failures); a queued ``Completion``
    is returned as is (to script token counts and costs); a ``str`` becomes a free reply.
    """

    provider = "fake"

    def __init__(
        self, model: str = "fake", *, default: str | None = None,
        logprob_table: Callable[[str], list[TokenLogprob]] | None = None,
        capabilities: Capabilities | None = None,
    ) -> None:
        self.model = model
        self.default = default  # reply when the queue is empty (None: raise)
        self.logprob_table = logprob_table or word_logprobs
        self._caps = capabilities or Capabilities(True, True, True, 20)
        self.prompts: list[str] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []  # (method, settings) per call
        self._queue: list[str | Exception | Completion] = []
        self._lock = threading.Lock()

    def enqueue(self, *replies: str | Exception | Completion) -> None:
        """Script the next replies, answered in order."""
        with self._lock:
            self._queue.extend(replies)

    def capabilities(self) -> Capabilities:
        return self._caps

    def local_backend(self) -> None:
        """A fake has no in-process model."""
        return None

    @property
    def breaker_open(self) -> bool:
        """A fake has no circuit breaker (script an exception to simulate a dead server)."""
        return False

    def _next(self, method: str, prompt: str, settings: dict[str, Any]) -> Completion:
        with self._lock:
            self.prompts.append(prompt)
            self.calls.append((method, settings))
            reply = self._queue.pop(0) if self._queue else self.default
        if reply is None:
            raise LLMError("FakeClient has no reply queued; call enqueue() before this call")
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, Completion):
            return dataclasses.replace(reply)  # a copy: callers set call_id/cached on it
        return Completion(text=reply, tokens_in=_word_count(prompt),
                          tokens_out=_word_count(reply), cost=0.0, latency_s=0.0,
                          finish_reason="stop")

    def complete(
        self, prompt: str, *, max_tokens: int = 64, temperature: float = 0.0,
        stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> Completion:
        return self._next("complete", prompt, settings_of(max_tokens, temperature, stop, seed))

    def chat(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int = 64,
        temperature: float = 0.0, stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> Completion:
        settings = settings_of(max_tokens, temperature, stop, seed)
        return self._next("chat", render_messages(messages), settings)

    def prompt_logprobs(self, prompt: str, *, top_logprobs: int = 20) -> Completion:
        """From ``logprob_table(prompt)`` (default :func:`word_logprobs`); no queue involved."""
        with self._lock:
            self.prompts.append(prompt)
            self.calls.append(("prompt_logprobs", {"top_logprobs": top_logprobs}))
        tokens = self.logprob_table(prompt)
        return Completion(text="", tokens_in=len(tokens), tokens_out=0, cost=0.0, latency_s=0.0,
                          finish_reason="length", prompt_logprobs=tokens)

    def complete_many(
        self, prompts: Sequence[str], *, max_tokens: int = 64, temperature: float = 0.0,
        stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> list[Completion]:
        return [self.complete(p, max_tokens=max_tokens, temperature=temperature, stop=stop,
                              seed=seed) for p in prompts]
