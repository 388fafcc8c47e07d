"""RecordingClient: one llm_calls row per call, the cache, budgets, secrets, forwarding."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest

from autolabel.db import Database, LLMCall
from autolabel.errors import BudgetExceeded, LLMError
from autolabel.llm import Completion, FakeClient, RecordingClient, TokenLogprob
from tests.llm.helpers import SECRET, MockServer, completion_body, ok, rows, scripted


def test_cache_hit_makes_no_second_call(database: Database) -> None:
    fake = FakeClient()
    fake.enqueue("an answer")
    client = RecordingClient(fake, database)
    first = client.complete("Explain feature 3", max_tokens=10)
    second = client.complete("Explain feature 3", max_tokens=10)
    assert not first.cached and first.call_id is not None
    assert second.cached and second.text == "an answer" and second.cost == 0.0
    assert second.call_id == first.call_id and len(fake.prompts) == 1
    assert len(rows(database)) == 1
    assert client.totals == {"calls": 1, "cached": 1, "tokens_in": 3, "tokens_out": 2, "cost": 0}
    with pytest.raises(LLMError):  # other settings: a different request, so a real call
        client.complete("Explain feature 3", max_tokens=11)


def test_no_cache_calls_again_and_records_anew(database: Database) -> None:
    fake = FakeClient()
    fake.enqueue("first", "second")
    RecordingClient(fake, database).complete("p")
    again = RecordingClient(fake, database, use_cache=False).complete("p")
    assert again.text == "second" and not again.cached and len(rows(database)) == 2
    newest = RecordingClient(fake, database).complete("p")  # cache answers with the newest row
    assert newest.cached and newest.text == "second"


def test_rows_hold_the_request_and_errors(database: Database) -> None:
    fake = FakeClient()
    fake.enqueue("ok reply", LLMError("server exploded"))
    client = RecordingClient(fake, database, run_id=None)
    client.chat([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                temperature=0.7, seed=5)
    with pytest.raises(LLMError):
        client.complete("boom")
    good, bad = rows(database)
    assert good.status == "ok" and good.provider == "fake" and good.response == "ok reply"
    assert good.request["method"] == "chat" and good.request["settings"]["seed"] == 5
    assert good.request["messages"][0] == {"role": "system", "content": "be brief"}
    assert good.prompt == "system: be brief\nuser: hi"
    assert bad.status == "error" and "server exploded" in (bad.error or "")
    assert bad.response is None
    with pytest.raises(LLMError):  # errors are never served from the cache
        client.complete("boom")


def test_prompt_logprobs_are_cached_whole(database: Database) -> None:
    table = [TokenLogprob("<bos>", None, {}), TokenLogprob(" 7", -0.25, {" 7": -0.25, " 3": -2.0})]
    fake = FakeClient(logprob_table=lambda prompt: table)
    client = RecordingClient(fake, database)
    fresh = client.prompt_logprobs("x", top_logprobs=5)
    hit = client.prompt_logprobs("x", top_logprobs=5)
    assert hit.cached and hit.prompt_logprobs == fresh.prompt_logprobs == table
    assert len(fake.prompts) == 1


def test_complete_many_records_each_and_saves_work_before_failing(database: Database) -> None:
    fake = FakeClient()
    fake.enqueue("a", LLMError("down"), "c")
    client = RecordingClient(fake, database)
    with pytest.raises(LLMError, match="down"):
        client.complete_many(["p1", "p2", "p3"])
    assert [r.status for r in rows(database)] == ["ok", "error", "ok"]
    fake.enqueue("b")
    assert [c.text for c in client.complete_many(["p1", "p2", "p3"])] == ["a", "b", "c"]
    assert client.totals["cached"] == 2


def test_cost_totals_from_the_price_table(database: Database) -> None:
    server = MockServer(lambda body, path: ok(completion_body(n_in=1000, n_out=500)))
    inner, _ = server.client("my-model", prices={"my-model": (2.0, 10.0)})
    client = RecordingClient(inner, database)
    client.complete("a")
    client.complete("b")
    client.complete("a")  # cached: free
    expected = 2 * (1000 * 2.0 + 500 * 10.0) / 1e6
    assert client.totals["cost"] == pytest.approx(expected)
    assert client.totals["tokens_in"] == 2000 and client.totals["cached"] == 1
    assert sum(r.cost for r in rows(database)) == pytest.approx(expected)
    assert all(r.request["price_known"] is True for r in rows(database))


def test_unknown_price_is_flagged(database: Database) -> None:
    inner, _ = MockServer(lambda body, path: ok(completion_body())).client("mystery")
    RecordingClient(inner, database).complete("a")
    assert rows(database)[0].request["price_known"] is False


def test_budget_stops_before_the_call(database: Database) -> None:
    fake = FakeClient()
    spend = Completion("x", tokens_in=10, tokens_out=10, cost=0.6, latency_s=0.0)
    fake.enqueue(spend, spend, spend)
    client = RecordingClient(fake, database, max_cost=1.0)
    client.complete("1")
    client.complete("2")
    with pytest.raises(BudgetExceeded, match=r"max_cost .*finished work is saved"):
        client.complete("3")
    assert len(fake.prompts) == 2 and len(rows(database)) == 2
    assert client.complete("1").cached  # the cache still answers once the budget is spent


def test_token_budget(database: Database) -> None:
    fake = FakeClient(default="one two three")
    client = RecordingClient(fake, database, max_tokens_total=8)
    client.complete("a b c")  # 3 in + 3 out
    client.complete("d e f")  # 12 >= 8 afterwards
    with pytest.raises(BudgetExceeded, match="token budget"):
        client.complete("g")


def test_api_key_is_never_stored(database: Database, tmp_path: Path) -> None:
    replies = scripted(ok(completion_body()), httpx2.Response(500, text="fail"),
                       httpx2.Response(401, json={"error": {"message": "bad"}}))
    inner, _ = MockServer(replies).client(max_retries=0, breaker_threshold=0)
    client = RecordingClient(inner, database)
    client.complete("fine")
    for prompt in ("five hundred", "unauthorised"):
        with pytest.raises(LLMError):
            client.complete(prompt)
    stored = rows(database)
    assert [r.status for r in stored] == ["ok", "error", "error"]
    for row in stored:
        for column in LLMCall.__table__.columns:
            assert SECRET not in json.dumps(getattr(row, column.name), default=str)
    database.close()
    assert SECRET.encode() not in (tmp_path / "t.db").read_bytes()


def test_breaker_and_backend_are_forwarded(database: Database) -> None:
    """Callers ask the wrapper, never look inside it (no ``.inner`` peeking)."""
    server = MockServer(scripted(httpx2.Response(503, text="down")))
    inner, _ = server.client(max_retries=0, breaker_threshold=1)
    client = RecordingClient(inner, database)
    assert client.breaker_open is False and client.local_backend() is None
    with pytest.raises(LLMError):
        client.complete("x")
    assert client.breaker_open is True
    assert RecordingClient(FakeClient(), None).local_backend() is None
