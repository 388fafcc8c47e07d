"""Recording, caching and budgets: every call one ``llm_calls`` row, identical requests free.

:class:`RecordingClient` wraps any client so that every call becomes one ``llm_calls`` row, an
identical request is answered from that table (a cache that makes re-runs free and resumable),
and a cost/token budget stops a run cleanly *before* it overspends. The table itself is
:mod:`autolabel.store.llm_calls`'s business; this module decides what goes in it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autolabel.db import redact
from autolabel.errors import BudgetExceeded
from autolabel.llm.base import (
    Capabilities,
    Completion,
    LLMClient,
    TokenLogprob,
    first_line,
    render_messages,
    request_hash,
    run_concurrently,
    settings_of,
)
from autolabel.store.llm_calls import NewCall, StoredCall, add_call, cached_call

if TYPE_CHECKING:
    from autolabel.db import Database
    from autolabel.llm.local import LocalClient


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
    None nothing is recorded or cached, but the budget still applies. A cache hit never touches
    the wrapped client, so a lazy local model is not loaded for it.
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

    def local_backend(self) -> LocalClient | None:
        """The wrapped client's in-process model (calls on it bypass the record and budget)."""
        return self.inner.local_backend()

    @property
    def breaker_open(self) -> bool:
        """The wrapped client's circuit breaker."""
        return self.inner.breaker_open

    def complete(
        self, prompt: str, *, max_tokens: int = 64, temperature: float = 0.0,
        stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> Completion:
        settings = settings_of(max_tokens, temperature, stop, seed)
        request = self._request("complete", {"prompt": prompt, **settings}, prompt)
        return self._answer(request, lambda: self.inner.complete(
            prompt, max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed))

    def chat(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int = 64,
        temperature: float = 0.0, stop: Sequence[str] | None = None, seed: int | None = None,
    ) -> Completion:
        settings = settings_of(max_tokens, temperature, stop, seed)
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
        return run_concurrently([functools.partial(call, p) for p in prompts], workers)

    def _complete_batched(self, prompts: Sequence[str], kw: dict[str, Any]) -> list[Completion]:
        settings = settings_of(kw["max_tokens"], kw["temperature"], kw["stop"], kw["seed"])
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
        with self.database.session() as session:
            stored = cached_call(session, request.key)
        if stored is None:
            return None
        with self._lock:
            self._totals["cached"] += 1
        return _from_stored(stored, request.method)

    def _store(
        self, request: _Request, completion: Completion | None, error: BaseException | None
    ) -> int | None:
        """Write one llm_calls row (ok or error); returns its id."""
        if self.database is None:
            return None
        call = self._new_call(request, completion, error)
        with self.database.session() as session:
            return add_call(session, call)

    def _new_call(
        self, request: _Request, completion: Completion | None, error: BaseException | None
    ) -> NewCall:
        """The llm_calls row of one call (ok or error), not yet written."""
        return NewCall(
            provider=self.provider, model=self.model, request_hash=request.key,
            request=self._request_json(request, completion), prompt=request.prompt,
            response=None if completion is None else _response_text(request.method, completion),
            tokens_in=completion.tokens_in if completion else 0,
            tokens_out=completion.tokens_out if completion else 0,
            cost=completion.cost if completion else 0.0,
            latency_s=completion.latency_s if completion else 0.0,
            status="ok" if completion else "error",
            error=None if error is None else f"{type(error).__name__}: {first_line(error)}",
            run_id=self.run_id,
        )

    def check_budget(self) -> None:
        """Raise :class:`BudgetExceeded` when a budget is used up (before handing out work)."""
        self._check_budget()

    def absorb(self, calls: Sequence[NewCall], spent: dict[str, float]) -> list[int | None]:
        """Take in calls another process made (a Ray actor's client, which writes nothing):
        their ``llm_calls`` rows, written here under this client's run, and their spending,
        counted against this client's budget, so the budget holds across a cluster. Returns
        the new rows' ids, in order (None each without a database)."""
        with self._lock:
            for key in self._totals:
                self._totals[key] += spent.get(key, 0)
        if self.database is None or not calls:
            return [None] * len(calls)
        with self.database.session() as session:
            return [add_call(session, dataclasses.replace(call, run_id=self.run_id))
                    for call in calls]

    def _request_json(self, request: _Request, completion: Completion | None) -> dict[str, Any]:
        """Settings and provenance; never credentials (the client holds the key, not us)."""
        settings = {k: v for k, v in request.payload.items() if k not in ("prompt", "messages")}
        data: dict[str, Any] = {"method": request.method, "settings": settings}
        if "messages" in request.payload:
            data["messages"] = request.payload["messages"]
        base_url = getattr(self.inner, "base_url", None)
        if base_url:
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


def _from_stored(stored: StoredCall, method: str) -> Completion:
    """A stored reply as a free ``cached=True`` completion (logprobs decoded when present)."""
    text, logprobs = stored.response or "", None
    if method == "prompt_logprobs":
        decoded = json.loads(text)
        text, logprobs = decoded["text"], _load_logprobs(decoded["prompt_logprobs"])
    return Completion(text=text, tokens_in=stored.tokens_in, tokens_out=stored.tokens_out,
                      cost=0.0, latency_s=0.0, cached=True, call_id=stored.id,
                      finish_reason=stored.request.get("finish_reason"),
                      prompt_logprobs=logprobs)
