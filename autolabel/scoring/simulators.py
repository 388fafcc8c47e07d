"""Simulators that need no in-process model, and the simulation prompt they share.

- :class:`EchoLogprobSimulator`: all-at-once through a server's echo+logprobs (one request per
  sequence): the prompt holds instructions, few-shot neurons, the explanation and the sequence
  with one ``?`` slot per token, and each slot's top logprobs give the expected digit (0-9).
- :class:`JSONSimulator`: chat-only servers write one number per token; a count mismatch is a
  ``parse_error`` status, never silent zeros.
- :class:`EmbeddingSimulator`: no LLM; cosine between the explanation's embedding and each
  token's embedding. Weak LLMs (the offline Gemma 3 270M base) ignore the explanation (issue 9);
  the sanity check measures that and ``choose_simulator`` falls back to embeddings.

The in-process KV-cache simulator is :mod:`autolabel.scoring.local_simulator`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from autolabel.errors import ConfigError
from autolabel.prompting import (
    MAX_EXPLANATION_CHARS,
    render,
    render_messages,
    sanitize_token,
)
from autolabel.scoring.metrics import expected_digit
from autolabel.scoring.types import SCALE_MAX, SimulationParseError

if TYPE_CHECKING:
    from autolabel.embed import Embedder
    from autolabel.llm import LLMClient, TokenLogprob

PLACEHOLDER = "?"
LOGPROB_TEMPLATE = "simulate-logprob.j2"
JSON_TEMPLATE = "simulate-json.j2"
_JSON_LIST = re.compile(r"\[[^\[\]]*\]", re.S)


# ------------------------------------------------------------------------------ prompts


def clean_explanation(explanation: str) -> str:
    """One line, capped, special tokens defused: explanations can come from corpus-fed LLMs."""
    return sanitize_token(" ".join(explanation.split()), max_chars=MAX_EXPLANATION_CHARS)


def display_token(token: str) -> str:
    """A corpus token as shown on its ``token<TAB>?`` line."""
    return sanitize_token(token).strip()


def simulation_prefix(explanation: str) -> str:
    """Instructions + few-shot neurons + the explanation, ending where the sequence starts."""
    return render(LOGPROB_TEMPLATE, explanation=clean_explanation(explanation)).rstrip() + "\n"


def simulation_lines(tokens: Sequence[str]) -> list[str]:
    """One ``token<TAB>?`` line per token: the slot to read is the ``?``."""
    return [f"{display_token(t)}\t{PLACEHOLDER}\n" for t in tokens]


def tokens_at(tokens: Sequence[TokenLogprob], prompt: str,
              offsets: Sequence[int]) -> list[TokenLogprob | None]:
    """The echoed token starting at each character offset of ``prompt`` (None if none does).
    A leading BOS or other text the server prepends is skipped by aligning the joined text."""
    joined = "".join(t.token for t in tokens)
    shift = joined.find(prompt.rstrip())  # > 0 when a BOS / leading space is echoed first
    if shift < 0:
        raise SimulationParseError("the server's echoed tokens do not spell the prompt; use a "
                                   "server with faithful echo (llama.cpp, vLLM) or the JSON "
                                   "simulator")
    spans: list[tuple[int, int, TokenLogprob]] = []
    at = -shift
    for tok in tokens:
        spans.append((at, at + len(tok.token), tok))
        at += len(tok.token)
    starts = {start: tok for start, _, tok in reversed(spans)}
    return [starts.get(o) or _covering(spans, o) for o in offsets]


def _covering(spans: Sequence[tuple[int, int, TokenLogprob]], offset: int) -> TokenLogprob | None:
    """The token whose text covers ``offset`` (a tokenizer merged the slot with a space)."""
    for start, end, tok in spans:
        if start <= offset < end:
            return tok
    return None


# ------------------------------------------------------------------------------ echo logprob


class EchoLogprobSimulator:
    """All-at-once simulation through a server's echo + logprobs: one request per sequence.

    The server tokenises the whole prompt itself, so slots are found by character offset: the
    echoed token that starts where a ``?`` was written carries, in its top alternatives, the
    model's distribution for that slot.
    """

    template = LOGPROB_TEMPLATE
    revision: str | None = None  # a server does not say which weights it serves

    def __init__(self, client: LLMClient, *, top_logprobs: int = 20) -> None:
        self.client = client
        self.name = f"llm-echo:{client.model}"
        self.top_logprobs = top_logprobs
        self.tokens_processed = 0

    def predict(self, explanation: str, sequences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        prefix = simulation_prefix(explanation)
        return [self._one(prefix, tokens) for tokens in sequences]

    def _one(self, prefix: str, tokens: Sequence[str]) -> np.ndarray:
        if not tokens:
            return np.zeros(0)
        lines = simulation_lines(tokens)
        prompt = prefix + "".join(lines)
        offsets, at = [], len(prefix)
        for line in lines:
            offsets.append(at + line.index("\t") + 1)
            at += len(line)
        reply = self.client.prompt_logprobs(prompt, top_logprobs=self.top_logprobs)
        self.tokens_processed += reply.tokens_in
        found = tokens_at(reply.prompt_logprobs or [], prompt, offsets)
        values = [expected_digit(t.top) if t is not None else None for t in found]
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            raise SimulationParseError(
                f"no digit among the top logprobs at {len(missing)} of {len(values)} slots; "
                "raise top_logprobs or use a stronger simulator model")
        return np.array(values, dtype=np.float64)


# ------------------------------------------------------------------------------ JSON (chat)


class JSONSimulator:
    """Chat-only servers: the model writes one integer 0-9 per token as a JSON list."""

    template = JSON_TEMPLATE
    revision: str | None = None  # a server does not say which weights it serves

    def __init__(self, client: LLMClient, *, max_tokens_per_value: int = 3) -> None:
        self.client = client
        self.name = f"llm-json:{client.model}"
        self.max_tokens_per_value = max_tokens_per_value
        self.tokens_processed = 0

    def predict(self, explanation: str, sequences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return [self._one(explanation, list(tokens), i) for i, tokens in enumerate(sequences)]

    def _one(self, explanation: str, tokens: list[str], index: int) -> np.ndarray:
        shown = [display_token(t) for t in tokens]
        messages = render_messages(JSON_TEMPLATE, explanation=clean_explanation(explanation),
                                   n_tokens=len(shown), tokens_json=json.dumps(shown))
        reply = self.client.chat(messages, max_tokens=8 + len(tokens) * self.max_tokens_per_value,
                                 temperature=0.0)
        self.tokens_processed += reply.tokens_in
        values = parse_json_predictions(reply.text, len(tokens))
        if values is None:
            raise SimulationParseError(
                f"sequence {index}: expected a JSON list of {len(tokens)} numbers, got "
                f"{reply.text[:80]!r}; use a stronger chat model or an echo-capable server")
        return values


def parse_json_predictions(text: str, n: int) -> np.ndarray | None:
    """The first JSON list of exactly ``n`` numbers in ``text``, clipped to 0-9; else None."""
    for match in _JSON_LIST.finditer(text):
        try:
            values = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(values, list) and len(values) == n and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return np.clip(np.array(values, dtype=np.float64), 0.0, SCALE_MAX)
    return None


# ------------------------------------------------------------------------------ embedding


EMBEDDING_MODES = ("token", "window", "mixed")


class EmbeddingSimulator:
    """No LLM: prediction = cosine(explanation embedding, embedding of the token).

    ``mode``: ``token`` embeds the token text alone; ``window`` embeds a few tokens of context
    with the token marked (``… the [[March]] meeting …``); ``mixed`` averages the two vectors.
    Measured on the planted benchmark (13 features, Wikipedia-sample test windows, Gemma
    tokens; true description vs another rule's): ``token`` r +0.46 vs +0.03, true > wrong on
    12/13; ``window`` +0.22 vs +0.04, 11/13; ``mixed`` +0.39 vs +0.03, 11/13 (with TokenStats
    explanations all three 12/13, token again the widest margin, +0.50 vs +0.05). Planted rules
    are token-level, and real SAE features often are too, so ``token`` is the default (and
    the fastest: 4x fewer texts to embed). Embeddings are cached per text, so a token seen in
    many sequences (or under several explanations) is embedded once. The embedder loads its
    model on its first ``embed``, so building this simulator costs nothing.
    """

    def __init__(self, embedder: Embedder, *, mode: str = "token", window: int = 3,
                 batch: int = 256) -> None:
        if mode not in EMBEDDING_MODES:
            raise ConfigError(f"unknown embedding simulator mode {mode!r}; use one of "
                              f"{', '.join(EMBEDDING_MODES)}")
        self.embedder, self.mode, self.window, self.batch = embedder, mode, window, batch
        self.name = f"embedding:{embedder.name}" + ("" if mode == "token" else f":{mode}")
        self.tokens_processed = 0  # texts embedded (cache misses)
        self._cache: dict[str, np.ndarray] = {}

    def _texts(self, tokens: Sequence[str], i: int) -> list[str]:
        word = tokens[i].strip() or tokens[i]
        if self.mode == "token":
            return [word]
        lo, hi = max(0, i - self.window), min(len(tokens), i + self.window + 1)
        marked = "".join(tokens[lo:i]) + " [[" + word + "]]" + "".join(tokens[i + 1:hi])
        return [marked.strip()] if self.mode == "window" else [word, marked.strip()]

    def _embed(self, texts: Sequence[str]) -> None:
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for start in range(0, len(todo), self.batch):
            chunk = todo[start:start + self.batch]
            self._cache.update(zip(chunk, self.embedder.embed(chunk), strict=True))
            self.tokens_processed += len(chunk)

    def predict(self, explanation: str, sequences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        per_token = [[self._texts(s, i) for i in range(len(s))] for s in sequences]
        self._embed([t for seq in per_token for texts in seq for t in texts] + [explanation])
        target = self._cache[explanation]
        out = []
        for seq in per_token:
            vecs = [np.mean([self._cache[t] for t in texts], axis=0) for texts in seq]
            sims = [float(v @ target / (np.linalg.norm(v) or 1.0)) for v in vecs]
            out.append(np.array(sims, dtype=np.float64))
        return out
