"""Any OpenAI-compatible server (OpenAI, vLLM, llama.cpp, …) through the openai SDK.

The client does its own retries (the SDK's are switched off) so that the policy is ours and
testable: exponential backoff with jitter on 429/5xx/timeouts/connection errors,
``Retry-After`` honoured, and a circuit breaker so a dead server fails a nightly batch in
seconds, not hours. Replies are parsed from the raw JSON, not the SDK's models, so the extra
fields llama.cpp adds (``completion_probabilities``) survive and garbage is detected and retried.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from autolabel.errors import LLMError
from autolabel.llm.base import Capabilities, Completion, first_line, run_concurrently
from autolabel.llm.replies import (
    BadReply,
    parse_logprobs,
    prompt_part,
    reply_text,
    usage,
)
from autolabel.llm.retry import CircuitBreaker, backoff_s, retry_after_s
from autolabel.safety import redact_url

# USD per 1M (input, output) tokens, as published in 2025. Users override/extend with
# ``llm.prices``; a model missing from both costs 0 and is recorded with ``price_known=False``.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-3.5-turbo-instruct": (1.50, 2.00),
}

_RETRY_STATUS = frozenset({408, 409, 429})
_MAX_RETRY_AFTER_S = 600.0


def _is_transient(exc: BaseException) -> bool:
    """Worth retrying: overload, server errors, timeouts, dropped connections, garbage."""
    import openai  # heavy (~1 s import): only once a server is talked to

    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRY_STATUS or exc.status_code >= 500
    return isinstance(exc, (openai.APIConnectionError, BadReply, json.JSONDecodeError))


class OpenAIClient:
    """Any OpenAI-compatible server via the openai SDK, with our retries and circuit breaker.

    Building one sends nothing: the server is first contacted by a request or by
    :meth:`capabilities` (which probes once and remembers).
    """

    provider = "openai"

    def __init__(
        self, model: str, base_url: str | None = None, api_key: str | None = None, *,
        timeout: float = 60, max_retries: int = 5, concurrency: int = 8,
        breaker_threshold: int = 5, prices: Mapping[str, tuple[float, float]] | None = None,
        http_client: Any = None, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import openai  # heavy (~1 s import): only when a server client is built

        self.model = model
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.sleep = sleep  # injectable so tests assert the waits without waiting
        self.breaker = CircuitBreaker(breaker_threshold)
        table = {**DEFAULT_PRICES, **(prices or {})}
        self.price: tuple[float, float] | None = table.get(model)
        self._caps: Capabilities | None = None
        self._client = openai.OpenAI(
            api_key=_resolve_api_key(api_key, base_url), base_url=base_url, timeout=timeout,
            max_retries=0, http_client=http_client,
        )
        self.base_url = str(self._client.base_url).rstrip("/")
        self.shown_url = redact_url(self.base_url)  # for messages: no credentials

    @property
    def price_known(self) -> bool:
        """Whether the price table knows this model (else its calls are recorded as free)."""
        return self.price is not None

    @property
    def breaker_open(self) -> bool:
        """True once ``breaker_threshold`` calls in a row failed: the server looks down."""
        return self.breaker.open

    def local_backend(self) -> None:
        """A server has no in-process model."""
        return None

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        """USD for one call from the price table (0 for a model with no known price)."""
        if self.price is None:
            return 0.0
        return (tokens_in * self.price[0] + tokens_out * self.price[1]) / 1e6

    def _request(self, method: str, **kwargs: Any) -> tuple[dict[str, Any], float]:
        """One HTTP attempt; returns the JSON body and its latency."""
        endpoint = self._client.chat.completions if method == "chat" else self._client.completions
        start = time.perf_counter()
        raw = endpoint.with_raw_response.create(model=self.model, **kwargs)
        latency = time.perf_counter() - start
        try:
            body = json.loads(raw.http_response.text)
        except ValueError as exc:
            raise BadReply(f"reply is not JSON: {raw.http_response.text[:80]!r}") from exc
        if not isinstance(body, dict) or not body.get("choices"):
            raise BadReply(f"reply has no choices: {str(body)[:80]!r}")
        return body, latency

    def _call(self, method: str, **kwargs: Any) -> tuple[dict[str, Any], float]:
        """``_request`` with retries, backoff, ``Retry-After`` and the circuit breaker."""
        if self.breaker.open:
            raise self._breaker_error()
        for attempt in range(self.max_retries + 1):
            try:
                result = self._request(method, **kwargs)
            except Exception as exc:
                if not _is_transient(exc):
                    self.breaker.success()  # the server is up; the request was wrong
                    raise self._rejected(exc) from exc
                if attempt == self.max_retries:
                    self.breaker.failure(first_line(exc))
                    raise self._gave_up(exc) from exc
                self.sleep(self._wait_s(exc, attempt))
            else:
                self.breaker.success()
                return result
        raise AssertionError("unreachable")

    def _wait_s(self, exc: BaseException, attempt: int) -> float:
        """The server's ``Retry-After`` when it sent one (capped), else jittered backoff."""
        response = getattr(exc, "response", None)
        hinted = retry_after_s(getattr(response, "headers", None))
        if hinted is not None:
            return min(hinted, _MAX_RETRY_AFTER_S)
        return backoff_s(attempt)

    def _breaker_error(self) -> LLMError:
        return LLMError(
            f"LLM server at {self.shown_url} failed {self.breaker.failures} times in a row "
            f"(last: {self.breaker.last_error}); check it is running, then re-run — finished "
            "work is saved"
        )

    def _gave_up(self, exc: BaseException) -> LLMError:
        if self.breaker.open:
            return self._breaker_error()
        return LLMError(
            f"LLM server at {self.shown_url} kept failing after {self.max_retries} retries "
            f"({first_line(exc)}); check it is running and not overloaded, then re-run"
        )

    def _rejected(self, exc: BaseException) -> LLMError:
        status = getattr(exc, "status_code", None)
        hint = {401: "check OPENAI_API_KEY", 403: "check the key's permissions",
                404: f"check the model name {self.model!r} and base URL"}.get(
            status or 0, "check the model name and llm settings")
        return LLMError(
            f"LLM server at {self.shown_url} rejected the request ({status or 'error'}: "
            f"{first_line(exc)}); {hint}"
        )

    def _completion(self, body: dict[str, Any], latency: float, method: str) -> Completion:
        try:
            text, finish = reply_text(body, method)
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"LLM server at {self.shown_url} sent an unreadable reply "
                           f"({first_line(exc)}); check it is OpenAI-compatible") from exc
        tokens_in, tokens_out = usage(body)
        return Completion(text=text, tokens_in=tokens_in, tokens_out=tokens_out,
                          cost=self.cost(tokens_in, tokens_out), latency_s=latency,
                          finish_reason=finish)

    def complete(
        self, prompt: str, *, max_tokens: int = 64, temperature: float = 0.0,
        stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> Completion:
        """Legacy ``/completions``: raw text continuation (base models, llama.cpp, vLLM)."""
        kwargs = _openai_settings(max_tokens, temperature, stop, seed)
        body, latency = self._call("complete", prompt=prompt, **kwargs)
        return self._completion(body, latency, "complete")

    def chat(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int = 64,
        temperature: float = 0.0, stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> Completion:
        """``/chat/completions``."""
        kwargs = _openai_settings(max_tokens, temperature, stop, seed)
        body, latency = self._call("chat", messages=list(messages), **kwargs)
        return self._completion(body, latency, "chat")

    def prompt_logprobs(self, prompt: str, *, top_logprobs: int = 20) -> Completion:
        """Logprob of every prompt token with its top alternatives (``echo`` + ``logprobs``).

        ``max_tokens=1``, not 0: llama-cpp-python reads 0 as "until the context is full".
        The one generated token is dropped from ``prompt_logprobs``.
        """
        k = max(0, min(top_logprobs, self.capabilities().max_top_logprobs or top_logprobs))
        body, latency = self._call("complete", prompt=prompt, echo=True, logprobs=k,
                                   max_tokens=1, temperature=0.0)
        result = self._completion(body, latency, "complete")
        tokens = parse_logprobs(body)
        if not tokens:
            raise LLMError(f"LLM server at {self.shown_url} returned no prompt logprobs; use a "
                           "server that supports echo+logprobs (llama.cpp, vLLM) or the JSON "
                           "simulator")
        generated = (body.get("usage") or {}).get("completion_tokens")
        result.prompt_logprobs = prompt_part(tokens, prompt, generated)
        return result

    def complete_many(
        self, prompts: Sequence[str], *, max_tokens: int = 64, temperature: float = 0.0,
        stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> list[Completion]:
        """``complete`` over many prompts, at most ``concurrency`` in flight."""
        call = functools.partial(self.complete, max_tokens=max_tokens, temperature=temperature,
                                 stop=stop, seed=seed)
        return run_concurrently([functools.partial(call, p) for p in prompts], self.concurrency)

    def capabilities(self) -> Capabilities:
        """Probe the server once (tiny requests) and remember what it accepts."""
        if self._caps is None:
            self._caps = self._probe()
        return self._caps

    def _probe(self) -> Capabilities:
        chat = self._accepts("chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
        completions = self._accepts("complete", prompt="Hi", max_tokens=1)
        max_top = 0
        for k in (20, 5) if completions is not None else ():
            body = self._accepts("complete", prompt="The cat sat on the mat", echo=True,
                                 logprobs=k, max_tokens=1, temperature=0.0)
            tokens = parse_logprobs(body) if body else None
            if tokens and len(tokens) > 2:  # more than the one generated token: echo works
                max_top = k
                break
        return Capabilities(chat=chat is not None, completions=completions is not None,
                            echo_logprobs=max_top > 0, max_top_logprobs=max_top)

    def _accepts(self, method: str, **kwargs: Any) -> dict[str, Any] | None:
        """The body when the server accepts this request, None when it rejects it (4xx);
        server outages still raise, so a dead server is not mistaken for a limited one."""
        try:
            return self._call(method, **kwargs)[0]
        except LLMError as exc:
            if isinstance(exc.__cause__, Exception) and not _is_transient(exc.__cause__):
                return None
            raise


def _openai_settings(
    max_tokens: int, temperature: float, stop: Sequence[str] | None, seed: int | None
) -> dict[str, Any]:
    """SDK keyword arguments; unset options are left out (some servers reject nulls)."""
    kwargs: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
    if stop:
        kwargs["stop"] = list(stop)
    if seed is not None:
        kwargs["seed"] = seed
    return kwargs


def _resolve_api_key(api_key: str | None, base_url: str | None) -> str:
    """The key, else OPENAI_API_KEY; a local server (base URL set) needs none, so a placeholder
    keeps the SDK from refusing to start."""
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if key:
        return key
    if base_url or os.environ.get("OPENAI_BASE_URL"):
        return "sk-no-key-required"
    raise LLMError("no OpenAI API key; set OPENAI_API_KEY, or llm.base_url for a local server")
