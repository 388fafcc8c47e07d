"""LLM clients: any OpenAI-compatible server (openai SDK), a local transformers model, a fake.

Every other module talks to an :class:`LLMClient`; which backend answers is a config choice.
:class:`RecordingClient` wraps any client so that every call becomes one ``llm_calls`` row, an
identical request is answered from that table (a cache that makes re-runs free and resumable),
and a cost/token budget stops a run cleanly *before* it overspends.

The HTTP client does its own retries (the SDK's are switched off) so that the policy is ours and
testable: exponential backoff with jitter on 429/5xx/timeouts/connection errors, ``Retry-After``
honoured, and a circuit breaker so a dead server fails a nightly batch in seconds, not hours.
"""

from __future__ import annotations

import dataclasses
import email.utils
import functools
import hashlib
import json
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from autolabel.errors import BudgetExceeded, ConfigError, LLMError
from autolabel.subject import DEFAULT_MODEL

if TYPE_CHECKING:
    from autolabel.config import LLMConfig
    from autolabel.db import Database

T = TypeVar("T")

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
_MAX_BACKOFF_S = 60.0
_MAX_RETRY_AFTER_S = 600.0


# ---------------------------------------------------------------------------------------------
# Data types


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


def _settings(
    max_tokens: int, temperature: float, stop: Sequence[str] | None, seed: int | None
) -> dict[str, Any]:
    """Generation settings in the one shape used for hashing and storing."""
    return {"max_tokens": max_tokens, "temperature": temperature,
            "stop": list(stop) if stop else None, "seed": seed}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


# ---------------------------------------------------------------------------------------------
# Parsing replies (OpenAI legacy completions, chat, and llama.cpp's own logprob shapes)


class _BadReply(Exception):
    """The server answered 2xx with something we cannot parse: retried like a 5xx."""


def _as_logprob(entry: Mapping[str, Any]) -> float | None:
    """llama.cpp's native shape gives either ``logprob`` or (older builds) ``prob``."""
    if entry.get("logprob") is not None:
        return float(entry["logprob"])
    if entry.get("prob") is not None:
        prob = float(entry["prob"])
        return math.log(prob) if prob > 0 else -math.inf
    return None


def _top_from_list(items: Sequence[Mapping[str, Any]] | None) -> dict[str, float]:
    """``[{token|tok_str, logprob|prob}]`` (chat / llama.cpp) -> ``{token: logprob}``."""
    top: dict[str, float] = {}
    for item in items or []:
        token = item.get("token", item.get("tok_str"))
        value = _as_logprob(item)
        if token is not None and value is not None:
            top[str(token)] = max(value, top.get(str(token), -math.inf))
    return top


def _legacy_logprobs(logprobs: Mapping[str, Any]) -> list[TokenLogprob]:
    """OpenAI legacy: parallel lists ``tokens``, ``token_logprobs``, ``top_logprobs``."""
    tokens = logprobs["tokens"]
    values = logprobs.get("token_logprobs") or [None] * len(tokens)
    tops = logprobs.get("top_logprobs") or [None] * len(tokens)
    return [
        TokenLogprob(str(tok), None if lp is None else float(lp),
                     {str(k): float(v) for k, v in (top or {}).items()})
        for tok, lp, top in zip(tokens, values, tops, strict=True)
    ]


def _content_logprobs(entries: Sequence[Mapping[str, Any]]) -> list[TokenLogprob]:
    """Chat-style / llama.cpp: ``[{token|content, logprob|prob, top_logprobs|probs}]``."""
    out = []
    for entry in entries:
        token = entry.get("token", entry.get("content", ""))
        top = _top_from_list(entry.get("top_logprobs", entry.get("probs")))
        out.append(TokenLogprob(str(token), _as_logprob(entry), top))
    return out


def parse_logprobs(body: Mapping[str, Any]) -> list[TokenLogprob] | None:
    """Token logprobs from a completions reply in any shape we know, or None when absent."""
    choice = (body.get("choices") or [{}])[0]
    logprobs = choice.get("logprobs")
    if isinstance(logprobs, Mapping) and logprobs.get("tokens") is not None:
        return _legacy_logprobs(logprobs)
    if isinstance(logprobs, Mapping) and logprobs.get("content") is not None:
        return _content_logprobs(logprobs["content"])
    probs = choice.get("completion_probabilities", body.get("completion_probabilities"))
    return _content_logprobs(probs) if probs is not None else None


def _reply_text(body: Mapping[str, Any], method: str) -> tuple[str, str | None]:
    """(text, finish_reason) from a completions or chat body."""
    choice = body["choices"][0]
    if method == "chat":
        content = (choice.get("message") or {}).get("content")
        return (content or ""), choice.get("finish_reason")
    return str(choice.get("text") or ""), choice.get("finish_reason")


def _usage(body: Mapping[str, Any]) -> tuple[int, int]:
    usage = body.get("usage") or {}
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def _prompt_part(
    tokens: list[TokenLogprob], prompt: str, n_generated: int | None
) -> list[TokenLogprob]:
    """Keep the echoed prompt tokens, drop the token(s) generated after them.

    The count comes from ``usage.completion_tokens``, not ``prompt_tokens``: llama-cpp-python
    counts a BOS in ``prompt_tokens`` that it does not echo, and an EOS it stopped on is in
    neither. Without usage, the prompt is the shortest prefix whose text covers the prompt.
    """
    if n_generated is not None and 0 <= n_generated <= len(tokens):
        return tokens[: len(tokens) - n_generated]
    covered = 0
    for i, tok in enumerate(tokens):
        if covered >= len(prompt):
            return tokens[:i]
        covered += len(tok.token)
    return tokens


# ---------------------------------------------------------------------------------------------
# Retry policy and circuit breaker


def retry_after_s(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date) / ``retry-after-ms``."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_s(attempt: int, base: float = 0.5, cap: float = _MAX_BACKOFF_S) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, so that 8 threads that
    failed together do not retry together."""
    delay = min(cap, base * 2**attempt)
    return delay / 2 + random.uniform(0, delay / 2)


def _is_transient(exc: BaseException) -> bool:
    """Worth retrying: overload, server errors, timeouts, dropped connections, garbage."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRY_STATUS or exc.status_code >= 500
    return isinstance(exc, (openai.APIConnectionError, _BadReply, json.JSONDecodeError))


class CircuitBreaker:
    """Opens after ``threshold`` calls in a row failed (each after its own retries).

    Once open, every call fails at once: with 8 threads and a dead server, a batch stops in
    one round of retries instead of grinding through every remaining feature.
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.failures = 0
        self.last_error = ""
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        return self.threshold > 0 and self.failures >= self.threshold

    def success(self) -> None:
        with self._lock:
            self.failures = 0

    def failure(self, error: str) -> None:
        with self._lock:
            self.failures += 1
            self.last_error = error

    def reset(self) -> None:
        """Close the breaker again (after the user restarted the server, in a long session)."""
        self.success()


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP client


class OpenAIClient:
    """Any OpenAI-compatible server via the openai SDK: OpenAI, vLLM, llama.cpp, ….

    Replies are parsed from the raw JSON, not the SDK's models, so the extra fields llama.cpp
    adds (``completion_probabilities``) survive and garbage is detected and retried.
    """

    provider = "openai"

    def __init__(
        self, model: str, base_url: str | None = None, api_key: str | None = None, *,
        timeout: float = 60, max_retries: int = 5, concurrency: int = 8,
        breaker_threshold: int = 5, prices: Mapping[str, tuple[float, float]] | None = None,
        http_client: Any = None, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import openai

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

    @property
    def price_known(self) -> bool:
        return self.price is not None

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
            raise _BadReply(f"reply is not JSON: {raw.http_response.text[:80]!r}") from exc
        if not isinstance(body, dict) or not body.get("choices"):
            raise _BadReply(f"reply has no choices: {str(body)[:80]!r}")
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
                    self.breaker.failure(_first_line(exc))
                    raise self._gave_up(exc) from exc
                self.sleep(self._wait_s(exc, attempt))
            else:
                self.breaker.success()
                return result
        raise AssertionError("unreachable")

    def _wait_s(self, exc: BaseException, attempt: int) -> float:
        response = getattr(exc, "response", None)
        hinted = retry_after_s(getattr(response, "headers", None))
        if hinted is not None:
            return min(hinted, _MAX_RETRY_AFTER_S)
        return backoff_s(attempt)

    def _breaker_error(self) -> LLMError:
        return LLMError(
            f"LLM server at {self.base_url} failed {self.breaker.failures} times in a row "
            f"(last: {self.breaker.last_error}); check it is running, then re-run — finished "
            "work is saved"
        )

    def _gave_up(self, exc: BaseException) -> LLMError:
        if self.breaker.open:
            return self._breaker_error()
        return LLMError(
            f"LLM server at {self.base_url} kept failing after {self.max_retries} retries "
            f"({_first_line(exc)}); check it is running and not overloaded, then re-run"
        )

    def _rejected(self, exc: BaseException) -> LLMError:
        status = getattr(exc, "status_code", None)
        hint = {401: "check OPENAI_API_KEY", 403: "check the key's permissions",
                404: f"check the model name {self.model!r} and base URL"}.get(
            status or 0, "check the model name and llm settings")
        return LLMError(
            f"LLM server at {self.base_url} rejected the request ({status or 'error'}: "
            f"{_first_line(exc)}); {hint}"
        )

    def _completion(self, body: dict[str, Any], latency: float, method: str) -> Completion:
        try:
            text, finish = _reply_text(body, method)
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"LLM server at {self.base_url} sent an unreadable reply "
                           f"({_first_line(exc)}); check it is OpenAI-compatible") from exc
        tokens_in, tokens_out = _usage(body)
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
            raise LLMError(f"LLM server at {self.base_url} returned no prompt logprobs; use a "
                           "server that supports echo+logprobs (llama.cpp, vLLM) or the JSON "
                           "simulator")
        generated = (body.get("usage") or {}).get("completion_tokens")
        result.prompt_logprobs = _prompt_part(tokens, prompt, generated)
        return result

    def complete_many(
        self, prompts: Sequence[str], *, max_tokens: int = 64, temperature: float = 0.0,
        stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> list[Completion]:
        """``complete`` over many prompts, at most ``concurrency`` in flight."""
        call = functools.partial(self.complete, max_tokens=max_tokens, temperature=temperature,
                                 stop=stop, seed=seed)
        return _run_concurrently([functools.partial(call, p) for p in prompts], self.concurrency)

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


def _run_concurrently(tasks: Sequence[Callable[[], T]], workers: int) -> list[T]:
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
    try:
        return task(), None
    except Exception as exc:
        return None, exc


# ---------------------------------------------------------------------------------------------
# Local in-process transformers model


class LocalClient:
    """A causal LM in this process (default: the offline Gemma 3 270M with its LM head).

    Generation is batched with left padding; prompt logprobs are exact (one forward, log-softmax
    of the logits). ``.model`` is the model's name (as for every client); the torch module is
    ``.lm`` and its tokenizer ``.tokenizer``, public so the simulation scorer can run its own
    batched forward over a shared-prefix KV cache.
    """

    provider = "local"

    def __init__(
        self, model: str = DEFAULT_MODEL, *, device: str | None = None, dtype: str | None = None,
        batch_size: int = 8,
    ) -> None:
        from autolabel.subject import _load_hf, _pick_device, _pick_dtype

        torch_device = _pick_device(device)
        lm, tokenizer, revision = _load_hf(model, _pick_dtype(dtype, torch_device))
        self._setup(lm.to(torch_device), tokenizer, model, batch_size)
        self.revision: str | None = revision  # provenance: hash / commit of the weights

    @classmethod
    def from_model(
        cls, model: Any, tokenizer: Any, name: str = "custom", *, batch_size: int = 8
    ) -> LocalClient:
        """Wrap an in-memory HF causal LM (tests, notebooks)."""
        client = cls.__new__(cls)
        client._setup(model, tokenizer, name, batch_size)
        return client

    def _setup(self, lm: Any, tokenizer: Any, name: str, batch_size: int) -> None:
        self.lm = lm.eval()
        self.tokenizer = tokenizer
        self.model = name
        self.revision = None
        self.batch_size = batch_size
        self._stop_ok: dict[tuple[str, ...], bool] = {}
        tokenizer.padding_side = "left"  # generation appends on the right
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    @property
    def device(self) -> Any:
        return next(self.lm.parameters()).device

    def capabilities(self) -> Capabilities:
        return Capabilities(chat=True, completions=True, echo_logprobs=True,
                            max_top_logprobs=int(self.lm.config.vocab_size))

    def complete(
        self, prompt: str, *, max_tokens: int = 64, temperature: float = 0.0,
        stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> Completion:
        return self.complete_many([prompt], max_tokens=max_tokens, temperature=temperature,
                                  stop=stop, seed=seed)[0]

    def chat(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int = 64,
        temperature: float = 0.0, stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> Completion:
        """The tokenizer's chat template when it has one, else a plain role-prefixed prompt."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True)
            special = False  # the template already starts with BOS
        else:
            text, special = render_messages(messages) + "\nassistant:", True
        return self._generate([text], max_tokens, temperature, stop, seed, special)[0]

    def complete_many(
        self, prompts: Sequence[str], *, max_tokens: int = 64, temperature: float = 0.0,
        stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> list[Completion]:
        """Batched generation; prompts are sorted by length so batches carry little padding."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: dict[int, Completion] = {}
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            done = self._generate([prompts[i] for i in chunk], max_tokens, temperature, stop,
                                  seed, True)
            results.update(zip(chunk, done, strict=True))
        return [results[i] for i in range(len(prompts))]

    def _generate(
        self, texts: list[str], max_tokens: int, temperature: float,
        stop: Sequence[str] | None, seed: int | None, special: bool,
    ) -> list[Completion]:
        """One left-padded ``generate`` call: greedy at temperature 0, seeded sampling else."""
        import torch

        start = time.perf_counter()
        batch = self.tokenizer(texts, return_tensors="pt", padding=True,
                               add_special_tokens=special).to(self.device)
        config = self._gen_config(max_tokens, temperature, stop)
        with torch.inference_mode(), _seeded(seed):
            out = self.lm.generate(**batch, generation_config=config, tokenizer=self.tokenizer)
        latency = (time.perf_counter() - start) / len(texts)
        new = out[:, batch["input_ids"].shape[1]:]
        n_in = batch["attention_mask"].sum(dim=1).tolist()
        return [self._finish(row, int(n), stop, latency) for row, n in zip(new, n_in, strict=True)]

    def _gen_config(self, max_tokens: int, temperature: float,
                    stop: Sequence[str] | None = None) -> Any:
        """An explicit config: the model's own defaults (top-k 64 …) must not leak into greedy.

        Stop strings end generation as soon as every row has produced one (a one-line
        explanation is ~15 tokens; without this the model runs on to ``max_tokens``).
        """
        from transformers import GenerationConfig

        sample = temperature > 0
        return GenerationConfig(
            max_new_tokens=max_tokens, do_sample=sample, temperature=temperature if sample else 1.0,
            top_k=0 if sample else 50, top_p=1.0, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id, bos_token_id=self.tokenizer.bos_token_id,
            stop_strings=self._usable_stops(stop),
        )

    def _usable_stops(self, stop: Sequence[str] | None) -> list[str] | None:
        """Stop strings transformers can match with this tokenizer (else None: ``_finish`` still
        cuts the text, generation just runs to ``max_tokens``).

        ``StopStringCriteria`` needs to map every vocabulary entry to text; word-level or other
        unusual tokenizers make it raise, and one such tokenizer must not fail every call.
        """
        from transformers import StopStringCriteria

        stops = [s for s in stop or () if s]
        if not stops:
            return None
        key = tuple(stops)
        if key not in self._stop_ok:
            try:
                StopStringCriteria(self.tokenizer, stops)
                self._stop_ok[key] = True
            except (ValueError, KeyError, IndexError):
                self._stop_ok[key] = False
        return stops if self._stop_ok[key] else None

    def _finish(
        self, row: Any, n_in: int, stop: Sequence[str] | None, latency: float
    ) -> Completion:
        """Cut a generated row at EOS (then at the first stop string) and count its tokens."""
        pad = self.tokenizer.pad_token_id
        ids = [i for i in row.tolist() if i != pad]  # rows that stopped early are padded
        eos = self.tokenizer.eos_token_id
        finish = "length"
        if eos in ids:
            ids, finish = ids[: ids.index(eos)], "stop"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = min((text.find(s) for s in stop or () if s and s in text), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        return Completion(text=text, tokens_in=n_in, tokens_out=len(ids), cost=0.0,
                          latency_s=latency, finish_reason=finish)

    def prompt_logprobs(self, prompt: str, *, top_logprobs: int = 20) -> Completion:
        """Exact logprobs of every prompt token (BOS first, with None) from one forward."""
        import torch

        start = time.perf_counter()
        ids = self.tokenizer(prompt, return_tensors="pt").input_ids.to(self.device)
        with torch.inference_mode():
            logits = self.lm(input_ids=ids, use_cache=False).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        k = max(0, min(top_logprobs, logprobs.shape[-1]))
        top_values, top_ids = logprobs.topk(k, dim=-1)
        row = ids[0].tolist()
        tokens = [TokenLogprob(self._piece(row[0]), None, {})]
        for pos in range(1, len(row)):
            top = self._top(top_ids[pos - 1], top_values[pos - 1])
            tokens.append(TokenLogprob(self._piece(row[pos]),
                                       float(logprobs[pos - 1, row[pos]]), top))
        return Completion(text="", tokens_in=len(row), tokens_out=0, cost=0.0,
                          latency_s=time.perf_counter() - start, finish_reason="length",
                          prompt_logprobs=tokens)

    def _piece(self, token_id: int) -> str:
        return str(self.tokenizer.decode([token_id]))

    def _top(self, ids: Any, values: Any) -> dict[str, float]:
        top: dict[str, float] = {}
        for token_id, value in zip(ids.tolist(), values.tolist(), strict=True):
            piece = self._piece(token_id)
            top[piece] = max(float(value), top.get(piece, -math.inf))
        return top


def _seeded(seed: int | None) -> Any:
    """Seed torch for one sampling call without disturbing the caller's global RNG state."""
    import contextlib

    import torch

    if seed is None:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def scope() -> Iterator[None]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield

    return scope()


# ---------------------------------------------------------------------------------------------
# Scripted fake (tests; in the style of simonw/llm's MockModel.enqueue)


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
        with self._lock:
            self._queue.extend(replies)

    def capabilities(self) -> Capabilities:
        return self._caps

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
        return self._next("complete", prompt, _settings(max_tokens, temperature, stop, seed))

    def chat(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int = 64,
        temperature: float = 0.0, stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> Completion:
        settings = _settings(max_tokens, temperature, stop, seed)
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


# ---------------------------------------------------------------------------------------------
# Recording, caching and budgets


def _dump_logprobs(tokens: list[TokenLogprob] | None) -> list[list[Any]] | None:
    return None if tokens is None else [[t.token, t.logprob, t.top] for t in tokens]


def _load_logprobs(rows: list[list[Any]] | None) -> list[TokenLogprob] | None:
    return None if rows is None else [TokenLogprob(str(a), b, dict(c)) for a, b, c in rows]


@dataclass
class _Request:
    """One logical request: what is hashed, what is stored, and how to make it."""

    method: str
    payload: dict[str, Any]  # prompt/messages + settings: the cache key
    prompt: str  # the text stored in llm_calls.prompt
    key: str = ""


class RecordingClient:
    """Wraps any client: one ``llm_calls`` row per call, a cache, and a cost/token budget.

    An identical request (same provider, model, method, prompt/messages and settings) is answered
    from the newest ``ok`` row (``cached=True``, cost 0) unless ``use_cache=False``. The budget
    counts what *this* client spent and is checked before each call, so a run stops with
    :class:`BudgetExceeded` and everything finished so far is already saved. With ``database``
    None nothing is recorded or cached, but the budget still applies.
    """

    def __init__(
        self, inner: LLMClient, database: Database | None, *, run_id: int | None = None,
        use_cache: bool = True, max_cost: float | None = None,
        max_tokens_total: int | None = None,
    ) -> None:
        self.inner = inner
        self.provider = inner.provider
        self.model = inner.model
        self.database = database
        self.run_id = run_id
        self.use_cache = use_cache
        self.max_cost = max_cost
        self.max_tokens_total = max_tokens_total
        self._totals: dict[str, float] = dict.fromkeys(
            ("calls", "cached", "tokens_in", "tokens_out", "cost"), 0)
        self._lock = threading.Lock()

    @property
    def totals(self) -> dict[str, float]:
        """calls (made, not cached), cached (answered from the table), tokens and cost spent."""
        with self._lock:
            return dict(self._totals)

    def capabilities(self) -> Capabilities:
        return self.inner.capabilities()

    def complete(
        self, prompt: str, *, max_tokens: int = 64, temperature: float = 0.0,
        stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> Completion:
        settings = _settings(max_tokens, temperature, stop, seed)
        request = self._request("complete", {"prompt": prompt, **settings}, prompt)
        return self._answer(request, lambda: self.inner.complete(
            prompt, max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed))

    def chat(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int = 64,
        temperature: float = 0.0, stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> Completion:
        settings = _settings(max_tokens, temperature, stop, seed)
        payload = {"messages": [dict(m) for m in messages], **settings}
        request = self._request("chat", payload, render_messages(messages))
        return self._answer(request, lambda: self.inner.chat(
            messages, max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed))

    def prompt_logprobs(self, prompt: str, *, top_logprobs: int = 20) -> Completion:
        payload = {"prompt": prompt, "top_logprobs": top_logprobs}
        request = self._request("prompt_logprobs", payload, prompt)
        return self._answer(request, lambda: self.inner.prompt_logprobs(
            prompt, top_logprobs=top_logprobs))

    def complete_many(
        self, prompts: Sequence[str], *, max_tokens: int = 64, temperature: float = 0.0,
        stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> list[Completion]:
        """Cache per prompt; misses go to the inner client batched (local) or concurrently
        (HTTP), and each is recorded as its own row."""
        kw: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature,
                              "stop": stop, "seed": seed}
        if getattr(self.inner, "batch_size", None):
            return self._complete_batched(prompts, kw)
        workers = int(getattr(self.inner, "concurrency", 1))
        call = functools.partial(self.complete, **kw)
        return _run_concurrently([functools.partial(call, p) for p in prompts], workers)

    def _complete_batched(self, prompts: Sequence[str], kw: dict[str, Any]) -> list[Completion]:
        settings = _settings(kw["max_tokens"], kw["temperature"], kw["stop"], kw["seed"])
        requests = [self._request("complete", {"prompt": p, **settings}, p) for p in prompts]
        results: list[Completion | None] = [self._cached(r) for r in requests]
        missing = [i for i, hit in enumerate(results) if hit is None]
        if missing:
            self._check_budget()
            try:
                fresh = self.inner.complete_many([prompts[i] for i in missing], **kw)
            except Exception as exc:
                for i in missing:
                    self._store(requests[i], None, exc)
                raise
            for i, completion in zip(missing, fresh, strict=True):
                results[i] = self._spent(requests[i], completion)
        return [r for r in results if r is not None]

    def _request(self, method: str, payload: dict[str, Any], prompt: str) -> _Request:
        request = _Request(method, payload, prompt)
        request.key = request_hash(self.provider, self.model, method, payload)
        return request

    def _answer(self, request: _Request, call: Callable[[], Completion]) -> Completion:
        hit = self._cached(request)
        if hit is not None:
            return hit
        self._check_budget()
        try:
            completion = call()
        except Exception as exc:
            self._store(request, None, exc)
            raise
        return self._spent(request, completion)

    def _spent(self, request: _Request, completion: Completion) -> Completion:
        """Count a fresh completion against the budget and record it."""
        with self._lock:
            self._totals["calls"] += 1
            self._totals["tokens_in"] += completion.tokens_in
            self._totals["tokens_out"] += completion.tokens_out
            self._totals["cost"] += completion.cost
        completion.call_id = self._store(request, completion, None)
        return completion

    def _check_budget(self) -> None:
        """Refuse to start a call once a budget is used up (work so far is already saved)."""
        totals = self.totals
        if self.max_cost is not None and totals["cost"] >= self.max_cost:
            raise BudgetExceeded(
                f"LLM cost budget reached (spent ${totals['cost']:.4f} of "
                f"${self.max_cost:.4f}); raise llm.max_cost and re-run — finished work is saved")
        used = totals["tokens_in"] + totals["tokens_out"]
        if self.max_tokens_total is not None and used >= self.max_tokens_total:
            raise BudgetExceeded(
                f"LLM token budget reached ({int(used)} of {self.max_tokens_total} tokens); "
                "raise the token budget and re-run — finished work is saved")

    def _cached(self, request: _Request) -> Completion | None:
        """The newest ok row for this request, as a free ``cached=True`` completion."""
        if not self.use_cache or self.database is None:
            return None
        from sqlalchemy import select

        from autolabel.db import LLMCall

        query = (select(LLMCall).where(LLMCall.request_hash == request.key,
                                       LLMCall.status == "ok")
                 .order_by(LLMCall.id.desc()).limit(1))
        with self.database.session() as session:
            row = session.scalars(query).first()
            if row is None:
                return None
            completion = _from_row(row, request.method)
        with self._lock:
            self._totals["cached"] += 1
        return completion

    def _store(
        self, request: _Request, completion: Completion | None, error: BaseException | None
    ) -> int | None:
        """Write one llm_calls row (ok or error); returns its id."""
        if self.database is None:
            return None
        from autolabel.db import LLMCall

        row = LLMCall(
            provider=self.provider, model=self.model, request_hash=request.key,
            request=self._request_json(request, completion), prompt=request.prompt,
            response=None if completion is None else _response_text(request.method, completion),
            tokens_in=completion.tokens_in if completion else 0,
            tokens_out=completion.tokens_out if completion else 0,
            cost=completion.cost if completion else 0.0,
            latency_s=completion.latency_s if completion else 0.0,
            status="ok" if completion else "error",
            error=None if error is None else f"{type(error).__name__}: {_first_line(error)}",
            run_id=self.run_id,
        )
        with self.database.session() as session:
            session.add(row)
            session.flush()
            return int(row.id)

    def _request_json(self, request: _Request, completion: Completion | None) -> dict[str, Any]:
        """Settings and provenance; never credentials (the client holds the key, not us)."""
        settings = {k: v for k, v in request.payload.items() if k not in ("prompt", "messages")}
        data: dict[str, Any] = {"method": request.method, "settings": settings}
        if "messages" in request.payload:
            data["messages"] = request.payload["messages"]
        base_url = getattr(self.inner, "base_url", None)
        if base_url:
            from autolabel.db import redact

            data["base_url"] = redact(str(base_url))
        if hasattr(self.inner, "price_known"):
            data["price_known"] = bool(self.inner.price_known)
        if completion is not None:
            data["finish_reason"] = completion.finish_reason
        return data


def _response_text(method: str, completion: Completion) -> str:
    """The reply as stored: plain text, or JSON carrying the logprobs for prompt_logprobs."""
    if method != "prompt_logprobs":
        return completion.text
    return json.dumps({"text": completion.text,
                       "prompt_logprobs": _dump_logprobs(completion.prompt_logprobs)})


def _from_row(row: Any, method: str) -> Completion:
    text, logprobs = row.response or "", None
    if method == "prompt_logprobs":
        stored = json.loads(text)
        text, logprobs = stored["text"], _load_logprobs(stored["prompt_logprobs"])
    return Completion(text=text, tokens_in=row.tokens_in, tokens_out=row.tokens_out, cost=0.0,
                      latency_s=0.0, cached=True, call_id=row.id,
                      finish_reason=(row.request or {}).get("finish_reason"),
                      prompt_logprobs=logprobs)


# ---------------------------------------------------------------------------------------------
# Factory


def make_client(
    config: LLMConfig, database: Database | None = None, *, run_id: int | None = None,
    use_cache: bool = True,
) -> LLMClient:
    """The client the config asks for; recorded, cached and budgeted when given a database.

    Unset ``base_url`` / key fall back to ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` (read by the
    openai SDK). ``config.temperature`` is a per-call setting: callers pass it to each call.
    """
    client: LLMClient
    if config.provider == "openai":
        if not config.model:
            raise ConfigError("llm.model is required with provider 'openai'; set it, e.g. "
                              "AUTOLABEL_LLM__MODEL=gpt-4o-mini")
        client = OpenAIClient(config.model, base_url=config.base_url, timeout=config.timeout,
                              max_retries=config.max_retries, concurrency=config.concurrency,
                              prices=config.prices)
    else:
        client = LocalClient(config.model or DEFAULT_MODEL)
    if database is None and config.max_cost is None:
        return client
    return RecordingClient(client, database, run_id=run_id, use_cache=use_cache,
                           max_cost=config.max_cost)
