"""LLM explainer against a scripted client (every template family); one slow real run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from autolabel.errors import BudgetExceeded, ConfigError, LLMError
from autolabel.examples import TextExample
from autolabel.explain import GATE_VERSION, STATUSES, LLMExplainer
from autolabel.prompting import DEFAULT_FAMILY, template_hash


@dataclass
class _Caps:
    chat: bool = True
    completions: bool = True
    echo_logprobs: bool = False


@dataclass
class _Reply:
    text: str
    call_id: int | None = None


class CircuitOpen(LLMError):
    """Stands in for the llm helper's circuit-breaker error."""

    circuit_open = True


@dataclass
class ScriptedClient:
    """Replies from a queue (str or exception); records every request it gets."""

    provider: str = "local"
    model: str = "fake-model"
    caps: _Caps = field(default_factory=_Caps)
    replies: list[Any] = field(default_factory=list)
    calls: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)
    batch_error: Exception | None = None

    def enqueue(self, *replies: Any) -> None:
        self.replies.extend(replies)

    def capabilities(self) -> _Caps:
        return self.caps

    @property
    def breaker_open(self) -> bool:
        """Like OpenAIClient's: open once a ``.breaker`` is set and open."""
        return getattr(getattr(self, "breaker", None), "open", False) is True

    def _next(self) -> _Reply:
        item = self.replies.pop(0)
        if isinstance(item, Exception):
            raise item
        return _Reply(item, call_id=len(self.calls))

    def complete(self, prompt: str, **kw: Any) -> _Reply:
        self.calls.append(("complete", prompt, kw))
        return self._next()

    def chat(self, messages: Sequence[dict[str, str]], **kw: Any) -> _Reply:
        self.calls.append(("chat", list(messages), kw))
        return self._next()

    def complete_many(self, prompts: Sequence[str], **kw: Any) -> list[_Reply]:
        self.calls.append(("complete_many", list(prompts), kw))
        if self.batch_error is not None:
            raise self.batch_error
        return [self._next() for _ in prompts]


def _example(words: list[str], hot: set[str], doc: str = "d0") -> TextExample:
    return TextExample(tokens=words, activations=[3.0 if w in hot else 0.0 for w in words],
                       document_id=doc)


def _feature() -> list[TextExample]:
    return [_example(["We", " met", " in", " May", "."], {" May"}, "d1"),
            _example(["Back", " in", " July", " again"], {" July"}, "d2")]


def test_auto_variant_is_completion_for_local_and_chat_for_remote() -> None:
    assert LLMExplainer(ScriptedClient(provider="local")).variant == "completion"
    assert LLMExplainer(ScriptedClient(provider="openai")).variant == "chat"
    no_chat = ScriptedClient(provider="openai", caps=_Caps(chat=False))
    assert LLMExplainer(no_chat).variant == "completion"
    with pytest.raises(ConfigError, match="does not support chat"):
        LLMExplainer(no_chat, variant="chat")


def test_ok_candidate_keeps_raw_reply_and_provenance() -> None:
    client = ScriptedClient()
    client.enqueue(" month names, especially in dates.")
    [cand] = LLMExplainer(client).explain(_feature())
    assert (cand.status, cand.text, cand.error) == ("ok", "month names, especially in dates",
                                                    None)
    assert cand.raw_reply == " month names, especially in dates."
    assert cand.explainer == "llm" and cand.llm_model == "fake-model" and cand.call_id == 1
    # The measured default for local base models (benchmarks/RESULTS.md, issue 14): pairs.
    assert cand.prompt_hash == template_hash("explain_pairs_completion.j2")
    assert cand.settings["template_version"] == "explain-pairs-completion/2"
    assert cand.settings["template_family"] == "pairs" and cand.gate_version == GATE_VERSION
    kind, prompt, kw = client.calls[0]
    assert kind == "complete" and prompt.endswith("Description: fires on")
    assert '"May" (10)' in prompt and "<<May>>" not in prompt
    assert kw["temperature"] == 0.0 and kw["stop"] == ["\n"] and kw["max_tokens"] == 40


def test_delphi_template_is_selectable_by_name() -> None:
    client = ScriptedClient()
    client.enqueue(" month names, especially in dates.")
    [cand] = LLMExplainer(client, template="delphi").explain(_feature())
    assert (cand.status, cand.text) == ("ok", "month names, especially in dates")
    assert cand.prompt_hash == template_hash("explain_delphi_completion.j2")
    assert cand.settings["template_version"] == "explain-delphi-completion/1"
    kind, prompt, _kw = client.calls[0]
    assert kind == "complete" and prompt.endswith("Description:") and "<<May>>" in prompt


def test_auto_template_is_the_measured_default_per_provider() -> None:
    for provider in ("local", "openai"):
        explainer = LLMExplainer(ScriptedClient(provider=provider))
        assert explainer.family.name == DEFAULT_FAMILY[provider] == "pairs"


def test_bills_template_stays_selectable_by_name() -> None:
    client = ScriptedClient()
    client.enqueue(" month names, especially in dates.")
    [cand] = LLMExplainer(client, template="bills", max_tokens=60).explain(_feature())
    assert (cand.status, cand.text) == ("ok", "month names, especially in dates")
    assert cand.prompt_hash == template_hash("explain_completion.j2")
    assert cand.settings["template_version"] == "explain-completion/1"
    kind, prompt, kw = client.calls[0]
    assert kind == "complete" and prompt.endswith("fires on") and " May\t10" in prompt
    assert kw["temperature"] == 0.0 and kw["stop"] == ["\n"] and kw["max_tokens"] == 60
    with pytest.raises(ConfigError, match="unknown explain template"):
        LLMExplainer(client, template="nope")


def test_failed_replies_are_statuses_with_raw_text() -> None:
    client = ScriptedClient()
    client.enqueue(" May\t10\n July\t10", "I cannot help with that.", "",
                   "month names\nAlso days\nAnd years")
    explainer = LLMExplainer(client)
    got = [explainer.explain(_feature())[0] for _ in range(4)]
    assert [c.status for c in got] == ["rejected", "refused", "rejected", "parse_error"]
    assert [c.reason for c in got] == ["echo", None, "empty", None]
    assert all(c.text is None and c.error for c in got)
    assert got[1].raw_reply == "I cannot help with that."
    assert got[0].raw_reply == " May\t10\n July\t10"


def test_gate_rejects_a_copy_of_the_prompts_own_example() -> None:
    """Whatever the family, a copy of one of its few-shot explanations is rejected (here on
    a months feature, which the copied explanation does not describe)."""
    for family in ("delphi", "pairs", "bills"):
        client = ScriptedClient()
        explainer = LLMExplainer(client, template=family)
        shown = explainer.prompt(_feature())
        example = ('negations such as "not" and "never"' if family != "bills" else
                   'Python code such as "def" and "return"')
        assert example in str(shown)
        client.enqueue(f" {example}.")
        [cand] = explainer.explain(_feature())
        assert (cand.status, cand.reason) == ("rejected", "copy"), family
        assert cand.raw_reply == f" {example}."


def test_k_candidates_are_sampled_with_distinct_seeds() -> None:
    client = ScriptedClient()
    client.enqueue("month names", "dates", "calendar months")
    cands = LLMExplainer(client, k=3).explain(_feature())
    assert [c.candidate for c in cands] == [0, 1, 2]
    assert [c.text for c in cands] == ["month names", "dates", "calendar months"]
    assert [kw["seed"] for _, _, kw in client.calls] == [0, 1, 2]
    assert all(kw["temperature"] == 0.7 for _, _, kw in client.calls)
    with pytest.raises(ConfigError, match="temperature > 0"):
        LLMExplainer(client, k=2, temperature=0.0)


def test_llm_error_becomes_status_error() -> None:
    client = ScriptedClient()
    client.enqueue(LLMError("server returned 500; retry later"), "month names")
    explainer = LLMExplainer(client)
    [failed] = explainer.explain(_feature())
    assert failed.status == "error" and "500" in (failed.error or "")
    assert failed.text is None and failed.raw_reply is None
    assert explainer.explain(_feature())[0].status == "ok"


def test_budget_and_circuit_breaker_propagate() -> None:
    client = ScriptedClient()
    client.enqueue(BudgetExceeded("max_cost reached"), CircuitOpen("breaker open"))
    explainer = LLMExplainer(client)
    with pytest.raises(BudgetExceeded):
        explainer.explain(_feature())
    with pytest.raises(CircuitOpen):
        explainer.explain(_feature())


def test_open_breaker_on_the_client_propagates() -> None:
    """OpenAIClient keeps a ``.breaker``; once it is open its errors must stop the stage."""
    client = ScriptedClient(provider="openai")
    client.breaker = type("Breaker", (), {"open": True})()  # type: ignore[attr-defined]
    client.enqueue(LLMError("LLM server failed 5 times in a row"))
    with pytest.raises(LLMError, match="in a row"):
        LLMExplainer(client).explain(_feature())


def test_consecutive_errors_stop_the_stage() -> None:
    client = ScriptedClient()
    client.enqueue(*[LLMError("connection refused")] * 3)
    explainer = LLMExplainer(client, max_consecutive_errors=3)
    assert explainer.explain(_feature())[0].status == "error"
    assert explainer.explain(_feature())[0].status == "error"
    with pytest.raises(LLMError, match="3 LLM calls failed in a row"):
        explainer.explain(_feature())


def test_explain_many_batches_and_skips_dead_features() -> None:
    client = ScriptedClient()
    client.enqueue("month names", "numbers", "month names again", "digits")
    dead = [TextExample(["a", "b"], [0.0, 0.0], "d9")]
    numbers = [_example(["It", " cost", " 12", " dollars"], {" 12"})]
    out = LLMExplainer(client, k=2).explain_many([_feature(), dead, numbers])
    assert [len(c) for c in out] == [2, 2, 2]
    assert [c.text for c in out[0]] == ["month names", "month names again"]
    assert [c.text for c in out[2]] == ["numbers", "digits"]
    assert all(c.status == "error" and "no activating" in (c.error or "") for c in out[1])
    assert [kind for kind, _, _ in client.calls] == ["complete_many", "complete_many"]
    assert [len(p) for _, p, _ in client.calls] == [2, 2]
    assert [kw["seed"] for _, _, kw in client.calls] == [0, 1]


def test_failed_batch_falls_back_to_single_calls() -> None:
    client = ScriptedClient(batch_error=LLMError("batch too large"))
    client.enqueue(LLMError("bad prompt"), "numbers")
    out = LLMExplainer(client).explain_many([_feature(), _feature()])
    assert [c[0].status for c in out] == ["error", "ok"]
    client = ScriptedClient(batch_error=BudgetExceeded("spent"))
    with pytest.raises(BudgetExceeded):
        LLMExplainer(client).explain_many([_feature()])


def test_chat_variant_sends_messages() -> None:
    client = ScriptedClient(provider="openai")
    client.enqueue("Explanation: summer months.")
    out = LLMExplainer(client).explain_many([_feature()])
    assert out[0][0].text == "summer months"
    kind, messages, kw = client.calls[0]
    assert kind == "chat" and messages[0]["role"] == "system" and kw["stop"] is None
    assert '"July" (10)' in messages[-1]["content"]  # pairs: the measured default
    delphi = ScriptedClient(provider="openai")
    delphi.enqueue("summer months")
    LLMExplainer(delphi, template="delphi").explain(_feature())
    assert "<<July>>" in delphi.calls[0][1][-1]["content"]
    bills = ScriptedClient(provider="openai")
    bills.enqueue("summer months")
    LLMExplainer(bills, template="bills").explain(_feature())
    assert " July\t10" in bills.calls[0][1][-1]["content"]


def test_failed_calls_are_counted() -> None:
    client = ScriptedClient()
    client.enqueue(LLMError("server returned 500"), "month names", LLMError("timeout"))
    explainer = LLMExplainer(client)
    statuses = [explainer.explain(_feature())[0].status for _ in range(3)]
    assert statuses == ["error", "ok", "error"] and explainer.failed_calls == 2


# --------------------------------------------------------------------------- real local model


@pytest.mark.slow
def test_local_client_explains_synthetic_features() -> None:
    llm = pytest.importorskip("autolabel.llm")
    client = llm.LocalClient()
    features = [
        [_example(["On", " 3", " March", " we", " left"], {" March"}),
         _example(["Late", " in", " October", ",", " snow"], {" October"})],
        [_example(["It", " cost", " 12", " dollars"], {" 12"}),
         _example(["About", " 340", " people", " came"], {" 340"})],
        [_example(["She", " did", " not", " go"], {" not"}),
         _example(["We", " never", " agreed"], {" never"})],
    ]
    out = LLMExplainer(client, max_tokens=24).explain_many(features)
    for cands in out:
        assert len(cands) == 1
        for cand in cands:
            assert cand.status in STATUSES
            assert cand.raw_reply is not None or cand.status == "error"
            if cand.status == "ok":
                assert cand.text and len(cand.text) <= 160
            if cand.status == "rejected":
                assert cand.reason and cand.error and cand.text is None
