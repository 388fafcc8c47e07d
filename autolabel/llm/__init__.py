"""LLM clients: any OpenAI-compatible server, a local transformers model, a scripted fake.

Every other module talks to an :class:`LLMClient` (:mod:`.base`); which backend answers is a
config choice made in :mod:`.factory`, the only place clients are built. :class:`RecordingClient`
(:mod:`.recording`) wraps any of them so every call is logged in ``llm_calls``, identical requests
are answered from it, and budgets stop a run before it overspends.

Modules: ``base`` (protocol, reply types, hashing), ``openai_compat`` (HTTP client with
retries and breaker; ``replies`` parses its bodies, ``retry`` holds the policy), ``local``
(in-process model, loaded lazily), ``fake`` (tests), ``recording`` (cache and budgets),
``factory`` (``make_client``, ``recorded_client``).
"""

from __future__ import annotations

from autolabel.llm.base import (
    Capabilities,
    Completion,
    LLMClient,
    TokenLogprob,
    render_messages,
    request_hash,
)
from autolabel.llm.factory import make_client, recorded_client
from autolabel.llm.fake import FakeClient, word_logprobs
from autolabel.llm.local import LocalClient
from autolabel.llm.openai_compat import DEFAULT_PRICES, OpenAIClient
from autolabel.llm.recording import RecordingClient
from autolabel.llm.replies import parse_logprobs
from autolabel.llm.retry import CircuitBreaker, backoff_s, retry_after_s

__all__ = [
    "DEFAULT_PRICES", "Capabilities", "CircuitBreaker", "Completion", "FakeClient", "LLMClient",
    "LocalClient", "OpenAIClient", "RecordingClient", "TokenLogprob", "backoff_s",
    "make_client", "parse_logprobs", "recorded_client", "render_messages", "request_hash",
    "retry_after_s", "word_logprobs",
]
