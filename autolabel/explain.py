"""Explainers: an LLM explainer (chat or completion prompt, k candidates) and an offline
token-statistics baseline.

Both explain from *train-split* examples only (scoring uses the test split) and return
:class:`Candidate` rows for the lead to store. A failure is a status with the raw reply and an
error message, never text posing as an explanation. Budget exhaustion and an opened circuit
breaker are raised, not stored: they mean the stage must stop, not that this feature failed.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autolabel.errors import BudgetExceeded, ConfigError, LLMError
from autolabel.examples import TextExample
from autolabel.prompting import (
    ERROR,
    FORMAT_VERSION,
    MAX_CONTEXT_TOKENS,
    OK,
    Records,
    format_records,
    parse_explanation,
    render,
    render_messages,
    sanitize_token,
    template_hash,
    template_version,
)

VARIANTS = ("chat", "completion")
DEFAULT_K_TEMPERATURE = 0.7
MAX_CONSECUTIVE_ERRORS = 5
TOKEN_STATS_VERSION = "token-stats/1"

if TYPE_CHECKING:
    from autolabel.llm import Completion, LLMClient


@dataclass
class Candidate:
    """One explanation candidate as stored in ``explanations`` (see DESIGN §3)."""

    explainer: str
    text: str | None
    status: str  # ok | parse_error | refused | error
    error: str | None
    raw_reply: str | None
    llm_model: str
    prompt_hash: str
    candidate: int
    call_id: int | None
    settings: dict[str, Any] = field(default_factory=dict)


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
    return _breaker_open(client)


def _breaker_open(client: LLMClient | None) -> bool:
    """Whether the client's circuit breaker is open (a RecordingClient forwards its backend's,
    so no wrapper needs unwrapping)."""
    return client is not None and client.breaker_open is True


# --------------------------------------------------------------------------- LLM explainer


class LLMExplainer:
    """Ask an LLM for a one-sentence explanation of each feature, k candidates per feature.

    ``variant="auto"`` picks the chat prompt for chat-capable remote models and the completion
    prompt (few-shot text ending in an open "Explanation:" slot) for local models: the default
    local model is a small *base* model that continues text rather than following a chat.
    """

    name = "llm"

    def __init__(self, client: LLMClient, *, variant: str = "auto", k: int = 1,
                 temperature: float | None = None, max_examples: int = 10,
                 max_tokens: int = 60, max_context_tokens: int = MAX_CONTEXT_TOKENS,
                 seed: int = 0, max_consecutive_errors: int = MAX_CONSECUTIVE_ERRORS) -> None:
        if k < 1:
            raise ConfigError(f"explain k must be >= 1, got {k}; set explain.k to 1 or more")
        self.client = client
        self.variant = _pick_variant(client, variant)
        self.k = k
        self.temperature = _pick_temperature(k, temperature)
        self.max_examples, self.max_tokens = max_examples, max_tokens
        self.max_context_tokens, self.seed = max_context_tokens, seed
        self.max_consecutive_errors = max_consecutive_errors
        self.template = f"explain_{self.variant}.j2"
        self.prompt_hash = template_hash(self.template)
        self._version = template_version(self.template)
        self._consecutive_errors = 0

    # ----- prompts

    def records(self, examples: Sequence[TextExample]) -> Records:
        """The strongest examples first, capped and normalised for the prompt."""
        ranked = sorted(examples, key=_max_act, reverse=True)
        return format_records([(e.tokens, e.activations) for e in ranked],
                              max_examples=self.max_examples,
                              max_context_tokens=self.max_context_tokens)

    def prompt(self, examples: Sequence[TextExample]) -> str | list[dict[str, str]]:
        """The rendered prompt: text (completion) or a message list (chat)."""
        recs = self.records(examples)
        if self.variant == "chat":
            return render_messages(self.template, records=recs.records, sparse=recs.sparse)
        return render(self.template, records=recs.records, sparse=recs.sparse)

    # ----- explaining

    def explain(self, examples: Sequence[TextExample]) -> list[Candidate]:
        """k candidates for one feature, one client call each (seeded per candidate)."""
        if not any(_max_act(e) > 0 for e in examples):
            return [self._no_examples(i) for i in range(self.k)]
        prompt = self.prompt(examples)
        return [self._ask(prompt, i) for i in range(self.k)]

    def explain_many(self, features: Sequence[Sequence[TextExample]]) -> list[list[Candidate]]:
        """k candidates per feature; the completion variant batches features through
        ``client.complete_many`` (one batch per candidate index, so seeds differ by index)."""
        if self.variant == "chat":
            return [self.explain(f) for f in features]
        out: list[list[Candidate]] = [[] for _ in features]
        live = [i for i, f in enumerate(features) if any(_max_act(e) > 0 for e in f)]
        prompts = {i: str(self.prompt(features[i])) for i in live}
        for c in range(self.k):
            replies = self._complete_batch([prompts[i] for i in live], c)
            for i, cand in zip(live, replies, strict=True):
                out[i].append(cand)
        for i, cands in enumerate(out):
            if i not in prompts:
                cands.extend(self._no_examples(c) for c in range(self.k))
        return out

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
        return [self._candidate(comp, c) for comp in completions]

    def _kwargs(self, c: int) -> dict[str, Any]:
        stop = ["\n"] if self.variant == "completion" else None
        return {"max_tokens": self.max_tokens, "temperature": self.temperature,
                "stop": stop, "seed": self.seed + c}

    def _ask(self, prompt: str | list[dict[str, str]], c: int) -> Candidate:
        """One client call → one candidate; LLM errors become status "error"."""
        try:
            if isinstance(prompt, str):
                comp = self.client.complete(prompt, **self._kwargs(c))
            else:
                comp = self.client.chat(prompt, **self._kwargs(c))
        except LLMError as exc:  # BudgetExceeded is no LLMError: it propagates
            return self._failed(exc, c)
        return self._candidate(comp, c)

    def _failed(self, exc: LLMError, c: int) -> Candidate:
        """Store an LLM error as a status, unless it must stop the stage (budget, circuit
        breaker, or too many failures in a row: the backend is evidently down)."""
        if _fatal(exc, self.client):
            raise exc
        self._consecutive_errors += 1
        if self._consecutive_errors >= self.max_consecutive_errors:
            raise LLMError(
                f"{self._consecutive_errors} LLM calls failed in a row (last: {exc}); "
                "check that the LLM backend is reachable, then re-run (finished work is kept)"
            ) from exc
        return self._make(c, None, ERROR, str(exc) or type(exc).__name__, None, None)

    def _candidate(self, comp: Completion, c: int) -> Candidate:
        self._consecutive_errors = 0
        status, text, error = parse_explanation(comp.text)
        return self._make(c, text, status, error, comp.text, comp.call_id)

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
                "template_version": self._version, "format": FORMAT_VERSION,
                "provider": self.client.provider, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "seed": self.seed + c, "k": self.k,
                "max_examples": self.max_examples,
                "max_context_tokens": self.max_context_tokens}


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


# --------------------------------------------------------------------------- token statistics


class TokenStatsExplainer:
    """Deterministic offline baseline: the tokens that carry the feature's activation mass and
    are over-represented relative to the corpus, plus the token that usually precedes them.

    weight(t) = activation on t / total activation; lift(t) = weight(t) / background p(t);
    tokens are ranked by weight × log(lift) (only lift > 1 counts while any token has it).
    Any scorer should beat this; if an LLM explanation does not, it explains nothing more.
    """

    name = "tokens"

    def __init__(self, top_n: int = 3, min_weight: float = 0.02,
                 context_share: float = 0.3) -> None:
        self.top_n, self.min_weight, self.context_share = top_n, min_weight, context_share
        self.prompt_hash = hashlib.sha256(TOKEN_STATS_VERSION.encode()).hexdigest()

    def explain(self, examples: Sequence[TextExample],
                background: Mapping[str, float]) -> Candidate:
        """One candidate; status "error" with a reason when nothing fired."""
        mass, before = _activation_mass(examples)
        total = sum(mass.values())
        if total <= 0:
            return self._make(None, ERROR, "no activating tokens in the train examples")
        weights = {t: m / total for t, m in mass.items()}
        tokens = self._top_tokens(weights, _background_probs(background))
        text = "tokens " + ", ".join(_quote(t) for t in tokens)
        prev, share = _top_item({t: m / total for t, m in before.items()})
        if prev is not None and share >= self.context_share:
            text += f" (often after {_quote(prev)})"
        return self._make(text, OK, None)

    def _top_tokens(self, weights: Mapping[str, float],
                    prob: Mapping[str, float] | None) -> list[str]:
        floor = _floor(prob)
        kept = {t: w for t, w in weights.items() if w >= self.min_weight} or dict(weights)
        lift = {t: w / (prob.get(t, floor) if prob else floor) for t, w in kept.items()}
        pool = [t for t in kept if lift[t] > 1] or list(kept)
        score = {t: kept[t] * math.log(max(lift[t], 1.0 + 1e-9)) for t in pool}
        if all(s == score[pool[0]] for s in score.values()):
            score = dict(kept)  # no lift information: rank by activation mass
        return sorted(pool, key=lambda t: (-score[t], -kept[t], t))[: self.top_n]

    def _make(self, text: str | None, status: str, error: str | None) -> Candidate:
        return Candidate(explainer=self.name, text=text, status=status, error=error,
                         raw_reply=None, llm_model="", prompt_hash=self.prompt_hash,
                         candidate=0, call_id=None, settings=self.settings())

    def settings(self) -> dict[str, Any]:
        """The algorithm version and its knobs (provenance)."""
        return {"algorithm": TOKEN_STATS_VERSION, "top_n": self.top_n,
                "min_weight": self.min_weight, "context_share": self.context_share}


def _activation_mass(examples: Sequence[TextExample]) -> tuple[dict[str, float],
                                                               dict[str, float]]:
    """Positive activation summed per token, and per token *preceding* an activating one."""
    mass: dict[str, float] = defaultdict(float)
    before: dict[str, float] = defaultdict(float)
    for ex in examples:
        for i, (tok, act) in enumerate(zip(ex.tokens, ex.activations, strict=True)):
            if act > 0 and math.isfinite(act):
                mass[tok] += act
                if i > 0:
                    before[ex.tokens[i - 1]] += act
    return mass, before


def _background_probs(background: Mapping[str, float]) -> dict[str, float] | None:
    """Counts or probabilities → probabilities (None when no background is known)."""
    total = sum(v for v in background.values() if v > 0)
    if total <= 0:
        return None
    return {t: v / total for t, v in background.items() if v > 0}


def _floor(prob: Mapping[str, float] | None) -> float:
    """Probability assumed for a token the background never saw: half the rarest one."""
    return min(prob.values()) / 2 if prob else 1e-6


def _top_item(shares: Mapping[str, float]) -> tuple[str | None, float]:
    if not shares:
        return None, 0.0
    tok = min(shares, key=lambda t: (-shares[t], t))
    return tok, shares[tok]


def _quote(token: str) -> str:
    """A token as it appears in the explanation text: quoted, leading space kept."""
    return '"' + sanitize_token(token).replace('"', '\\"') + '"'
