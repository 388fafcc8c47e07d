"""Reading OpenAI-compatible replies: text, usage, and token logprobs in every shape we know.

Servers disagree on the logprob shape: OpenAI's legacy completions send parallel lists,
chat-style replies (and recent llama.cpp) send ``logprobs.content`` entries, and llama.cpp's
native endpoint sends ``completion_probabilities`` with probabilities instead of logprobs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from autolabel.llm.base import TokenLogprob


class BadReply(Exception):
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


def reply_text(body: Mapping[str, Any], method: str) -> tuple[str, str | None]:
    """(text, finish_reason) from a completions or chat body."""
    choice = body["choices"][0]
    if method == "chat":
        content = (choice.get("message") or {}).get("content")
        return (content or ""), choice.get("finish_reason")
    return str(choice.get("text") or ""), choice.get("finish_reason")


def usage(body: Mapping[str, Any]) -> tuple[int, int]:
    """(prompt tokens, completion tokens); 0 when the server sent no usage."""
    counts = body.get("usage") or {}
    return int(counts.get("prompt_tokens") or 0), int(counts.get("completion_tokens") or 0)


def prompt_part(
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
