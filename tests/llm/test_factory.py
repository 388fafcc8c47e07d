"""The factory: ``make_client`` from an LLM config, and a run's lazy ``recorded_client``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import autolabel.llm.local as local_module
from autolabel.config import Config, LLMConfig
from autolabel.db import Database
from autolabel.errors import ConfigError, LLMError
from autolabel.llm import LocalClient, OpenAIClient, RecordingClient, make_client, recorded_client
from autolabel.loading import RunContext
from tests.llm.helpers import rows
from tests.tiny import tiny_model_dir


def test_make_client(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = LLMConfig(provider="openai", model="gpt-4o-mini", base_url="http://127.0.0.1:9/v1",
                       max_retries=2, concurrency=3)
    plain = make_client(config)
    assert isinstance(plain, OpenAIClient) and plain.concurrency == 3 and plain.max_retries == 2
    wrapped = make_client(config, database, use_cache=False)
    assert isinstance(wrapped, RecordingClient) and isinstance(wrapped.inner, OpenAIClient)
    assert not wrapped.use_cache
    budgeted = make_client(config.model_copy(update={"max_cost": 1.5}))
    assert isinstance(budgeted, RecordingClient) and budgeted.max_cost == 1.5
    with pytest.raises(ConfigError, match="llm.model"):
        make_client(LLMConfig(provider="openai"))
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(LLMError, match="OPENAI_API_KEY"):
        make_client(LLMConfig(provider="openai", model="gpt-4o-mini"))


def test_recorded_client_carries_run_budgets(database: Database) -> None:
    config = Config(llm=LLMConfig(provider="openai", model="gpt-4o-mini",
                                  base_url="http://127.0.0.1:9/v1", max_cost=2.0,
                                  max_total_tokens=1000))
    client = recorded_client(config, database, run_id=None, use_cache=False)
    assert isinstance(client.inner, OpenAIClient) and client.database is database
    assert (client.max_cost, client.max_tokens_total, client.use_cache) == (2.0, 1000, False)


@pytest.fixture
def load_count(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every model load a LocalClient does (the model name per load)."""
    loads: list[str] = []
    real = local_module._load_hf

    def counting(model: str, dtype: Any) -> Any:
        loads.append(model)
        return real(model, dtype)

    monkeypatch.setattr(local_module, "_load_hf", counting)
    return loads


def test_recorded_local_client_never_loads_for_cached_requests(
    tmp_path: Path, database: Database, load_count: list[str]
) -> None:
    """What lets a no-op ``autolabel run`` finish without loading the local model."""
    model_dir = str(tiny_model_dir(tmp_path / "tiny"))
    config = Config(llm=LLMConfig(provider="local", model=model_dir))
    first = recorded_client(config, database).complete("the cat", max_tokens=3)
    assert load_count == [model_dir] and not first.cached  # an earlier run filled the cache

    client = recorded_client(config, database, run_id=None)
    assert client.model == model_dir and client.provider == "local"
    assert client.capabilities().echo_logprobs and client.breaker_open is False
    backend = client.local_backend()
    assert isinstance(backend, LocalClient) and backend.model == model_dir
    hit = client.complete("the cat", max_tokens=3)
    assert hit.cached and hit.text == first.text and hit.call_id == first.call_id
    assert load_count == [model_dir] and not backend.loaded  # never loaded by this client

    fresh = client.complete("a dog", max_tokens=3)  # the first request the cache cannot answer
    assert not fresh.cached and backend.loaded and load_count == [model_dir, model_dir]
    assert len(rows(database)) == 2


def test_run_context_llm_is_the_lazy_recorded_client(
    tmp_path: Path, database: Database, load_count: list[str]
) -> None:
    model_dir = str(tiny_model_dir(tmp_path / "tiny"))
    config = Config(llm=LLMConfig(provider="local", model=model_dir, max_cost=3.0))
    ctx = RunContext(config, database, run_id=None, use_cache=False)
    client = ctx.llm
    assert isinstance(client, RecordingClient) and client.max_cost == 3.0
    assert not client.use_cache and ctx.loaded == []  # built, but no model in memory
    backend = client.local_backend()
    assert backend is not None and not backend.loaded and load_count == []
