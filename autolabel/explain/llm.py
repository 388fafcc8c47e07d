"""The LLM explainer: k candidates per feature from a template family, through the gate.

Explains from *train-split* examples only (scoring uses held-out splits). Every reply passes
the quality gate (:mod:`autolabel.explain.gate`) with the prompt it answered, so a copy of the
prompt's own example explanations is recognised whatever the template. Budget exhaustion and an
opened circuit breaker are raised, not stored: they mean the stage must stop, not that this
feature failed. Other LLM errors become status ``error`` (retried by the next run) and are
counted in :attr:`LLMExplainer.failed_calls`, so the stage can exit "partial".
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from autolabel.errors import BudgetExceeded, ConfigError, LLMError
from autolabel.examples import TextExample
from autolabel.explain.candidate import ERROR, Candidate
from autolabel.explain.gate import GATE_VERSION, GateConfig, judge_reply
from autolabel.prompting import (
    FORMAT_VERSION,
    VARIANTS,
    family,
    render_prompt,
    template_hash,
    template_version,
)

DEFAULT_K_TEMPERATURE = 0.7
MAX_CONSECUTIVE_ERRORS = 5
Prompt = str | list[dict[str, str]]

if TYPE_CHECKING:
    from autolabel.llm import Completion, LLMClient


def _max_act(example: TextExample) -> float:
    return max(example.activations, default=0.0)


def _fatal(exc: BaseException, client: LLMClient | None = None) -> bool:
    """Errors that must stop the stage instead of becoming a stored status: the budget ran
    out, or the client's circuit breaker opened (the backend is down; every further call
    would fail the same way). The breaker is recognised by a ``circuit_open`` attribute or a
    "Circuit…" error class, or by the client's ``breaker_open``."""
    if isinstance(exc, BudgetExceeded):
        return True
    if getattr(exc, "circuit_open", False) or "circuit" in type(exc).__name__.lower():
        return True
    return client is not None and client.breaker_open is True


class LLMExplainer:
    """Ask an LLM for a one-phrase explanation of each feature, k candidates per feature.

    ``template`` names a family (``auto``: the measured default for the client's provider);
    ``variant="auto"`` picks the chat prompt for chat-capable remote models and the completion
    prompt (few-shot text ending in an open slot) for local models: the default local model is
    a small *base* model that continues text rather than following a chat.

    A local model gets each batch of completion prompts as one ``complete_many`` (batched on
    one shared-prefix KV cache); a server gets one request per prompt, ``concurrency`` at a
    time, so a call that fails is that feature's ``error`` and is never asked twice.
    """

    name = "llm"

    def __init__(self, client: LLMClient, *, template: str = "auto", variant: str = "auto",
                 k: int = 1, temperature: float | None = None, max_tokens: int = 40,
                 seed: int = 0, max_consecutive_errors: int = MAX_CONSECUTIVE_ERRORS,
                 gate: GateConfig | None = None, concurrency: int = 1) -> None:
        if k < 1:
            raise ConfigError(f"explain k must be >= 1, got {k}; set explain.k to 1 or more")
        self.client = client
        self.family = family(template, client.provider)
        self.variant = _pick_variant(client, variant)
        self.k, self.temperature = k, _pick_temperature(k, temperature)
        self.max_tokens, self.seed = max_tokens, seed
        self.max_consecutive_errors = max_consecutive_errors
        self.gate = gate or GateConfig()
        self.template = self.family.file(self.variant)
        self.prompt_hash = template_hash(self.template)
        self._version = template_version(self.template)
        self.concurrency = max(1, concurrency)
        self._consecutive_errors = 0
        self._lock = threading.Lock()
        self.failed_calls = 0  # LLM errors stored as status "error" (retried next run)

    def prompt(self, examples: Sequence[TextExample]) -> Prompt:
        """The rendered prompt: text (completion) or a message list (chat)."""
        pairs = [(e.tokens, e.activations) for e in examples]
        return render_prompt(self.family, self.variant, pairs)

    def explain(self, examples: Sequence[TextExample]) -> list[Candidate]:
        """k candidates for one feature, one client call each (seeded per candidate)."""
        if not any(_max_act(e) > 0 for e in examples):
            return [self._no_examples(i) for i in range(self.k)]
        prompt = self.prompt(examples)
        return [self._ask(prompt, i) for i in range(self.k)]

    def explain_many(self, features: Sequence[Sequence[TextExample]]) -> list[list[Candidate]]:
        """k candidates per feature, one round per candidate index (seeds differ by index):
        a batched ``complete_many`` for a local model, else one call per prompt."""
        out: list[list[Candidate]] = [[] for _ in features]
        live = [i for i, f in enumerate(features) if any(_max_act(e) > 0 for e in f)]
        prompts = [self.prompt(features[i]) for i in live]
        batched = self.variant == "completion" and self.client.provider == "local"
        for c in range(self.k):
            replies = (self._complete_batch([str(p) for p in prompts], c) if batched
                       else self._ask_all(prompts, c))
            for i, cand in zip(live, replies, strict=True):
                out[i].append(cand)
        for i, cands in enumerate(out):
            if i not in live:
                cands.extend(self._no_examples(c) for c in range(self.k))
        return out

    def _ask_all(self, prompts: list[Prompt], c: int) -> list[Candidate]:
        """One call per prompt, ``concurrency`` at a time (answers in prompt order)."""
        if self.concurrency <= 1 or len(prompts) <= 1:
            return [self._ask(p, c) for p in prompts]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(lambda p: self._ask(p, c), prompts))

    def _complete_batch(self, prompts: list[str], c: int) -> list[Candidate]:
        """One ``complete_many`` call; if the batch call fails as a whole, retry one by one so
        a single bad prompt does not fail its neighbours."""
        if not prompts:
            return []
        try:
            completions = self.client.complete_many(prompts, **self._kwargs(c))
        except LLMError as exc:
            if _fatal(exc, self.client):
                raise
            return [self._ask(p, c) for p in prompts]
        if len(completions) != len(prompts):
            raise LLMError(f"complete_many returned {len(completions)} replies for "
                           f"{len(prompts)} prompts; this is a client bug, please report it")
        return [self._candidate(comp, c, p) for comp, p in zip(completions, prompts,
                                                               strict=True)]

    def _kwargs(self, c: int) -> dict[str, Any]:
        stop = ["\n"] if self.variant == "completion" else None
        return {"max_tokens": self.max_tokens, "temperature": self.temperature,
                "stop": stop, "seed": self.seed + c}

    def _ask(self, prompt: Prompt, c: int) -> Candidate:
        """One client call → one candidate; LLM errors become status "error"."""
        try:
            if isinstance(prompt, str):
                comp = self.client.complete(prompt, **self._kwargs(c))
            else:
                comp = self.client.chat(prompt, **self._kwargs(c))
        except LLMError as exc:  # BudgetExceeded is no LLMError: it propagates
            return self._failed(exc, c)
        return self._candidate(comp, c, prompt)

    def _failed(self, exc: LLMError, c: int) -> Candidate:
        """Store an LLM error as a status, unless it must stop the stage (budget, circuit
        breaker, or too many failures in a row: the backend is evidently down)."""
        if _fatal(exc, self.client):
            raise exc
        with self._lock:
            self._consecutive_errors += 1
            self.failed_calls += 1
            in_a_row = self._consecutive_errors
        if in_a_row >= self.max_consecutive_errors:
            raise LLMError(
                f"{in_a_row} LLM calls failed in a row (last: {exc}); "
                "check that the LLM backend is reachable, then re-run (finished work is kept)"
            ) from exc
        return self._make(c, None, ERROR, str(exc) or type(exc).__name__, None, None)

    def _candidate(self, comp: Completion, c: int, prompt: Prompt) -> Candidate:
        """A reply judged by the gate against the prompt it answered."""
        with self._lock:
            self._consecutive_errors = 0
        verdict = judge_reply(comp.text, prompt, self.gate)
        cand = self._make(c, verdict.text, verdict.status, verdict.error, comp.text,
                          comp.call_id)
        cand.reason, cand.gate_version = verdict.reason, GATE_VERSION
        return cand

    def _no_examples(self, c: int) -> Candidate:
        return self._make(c, None, ERROR, "no activating train examples; nothing to explain "
                          "(collect more examples or skip dead features)", None, None)

    def _make(self, c: int, text: str | None, status: str, error: str | None,
              raw: str | None, call_id: int | None) -> Candidate:
        return Candidate(explainer=self.name, text=text, status=status, error=error,
                         raw_reply=raw, llm_model=self.client.model,
                         prompt_hash=self.prompt_hash, candidate=c, call_id=call_id,
                         settings=self.settings(c))

    def settings(self, c: int = 0) -> dict[str, Any]:
        """Everything besides the template hash that shaped the request (provenance)."""
        return {"variant": self.variant, "template": self.template,
                "template_family": self.family.name, "template_version": self._version,
                "records": self.family.records, "format": FORMAT_VERSION,
                "max_examples": self.family.max_examples, "window": self.family.window,
                "provider": self.client.provider, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "seed": self.seed + c, "k": self.k,
                "gate_version": GATE_VERSION}


def _pick_variant(client: LLMClient, variant: str) -> str:
    """Chat for chat-capable remote models, completion for local base models."""
    caps = client.capabilities()
    if variant == "auto":
        variant = "chat" if caps.chat and client.provider != "local" else "completion"
    if variant not in VARIANTS:
        raise ConfigError(f"unknown explain prompt variant {variant!r}; "
                          f"use one of auto, {', '.join(VARIANTS)}")
    supported = caps.chat if variant == "chat" else caps.completions
    if not supported:
        raise ConfigError(f"the LLM {client.model!r} does not support {variant} requests; "
                          "choose the other prompt variant or another model")
    return variant


def _pick_temperature(k: int, temperature: float | None) -> float:
    """Greedy for a single candidate; sampling (default 0.7) when best-of-k needs variety."""
    if temperature is None:
        return DEFAULT_K_TEMPERATURE if k > 1 else 0.0
    if temperature < 0 or (k > 1 and temperature == 0):
        raise ConfigError(f"k={k} candidates need a temperature > 0 (got {temperature}); "
                          "raise the temperature or set k to 1")
    return float(temperature)
