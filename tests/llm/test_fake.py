"""FakeClient: scripted replies, errors and prompt logprobs for tests."""

from __future__ import annotations

import pytest

from autolabel.errors import LLMError
from autolabel.llm import Completion, FakeClient


def test_fake_client_scripts_replies_errors_and_logprobs() -> None:
    fake = FakeClient()
    fake.enqueue("one", LLMError("scripted failure"),
                 Completion("three", tokens_in=1, tokens_out=2, cost=0.5, latency_s=0.0))
    assert fake.complete("a b").text == "one"
    with pytest.raises(LLMError, match="scripted"):
        fake.chat([{"role": "user", "content": "b"}])
    assert fake.complete("c").cost == 0.5
    with pytest.raises(LLMError, match="enqueue"):
        fake.complete("d")
    assert fake.prompts == ["a b", "user: b", "c", "d"]
    table = fake.prompt_logprobs("The cat sat").prompt_logprobs
    assert table is not None and [t.token for t in table] == ["The", " cat", " sat"]
    assert table[0].logprob is None and table[1].logprob == -1.0


def test_fake_has_no_backend_and_no_breaker() -> None:
    fake = FakeClient()
    assert fake.local_backend() is None and fake.breaker_open is False
