"""The only way to build an LLM client: from config, recorded and budgeted when asked.

:func:`recorded_client` is what a run uses (one client per run: the ``llm_calls`` cache and the
run-wide cost and token budgets); :func:`make_client` is the general form for callers that may
want a bare client. Neither loads a local model nor contacts a server: that happens on the first
request the cache cannot answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autolabel.errors import ConfigError
from autolabel.llm.base import LLMClient
from autolabel.llm.local import LocalClient
from autolabel.llm.openai_compat import OpenAIClient
from autolabel.llm.recording import RecordingClient
from autolabel.subject import DEFAULT_MODEL

if TYPE_CHECKING:
    from autolabel.config import Config, LLMConfig
    from autolabel.db import Database


def _backend(config: LLMConfig) -> LLMClient:
    """The bare client the config names (nothing loaded, nothing sent yet).

    Unset ``base_url`` / key fall back to ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` (read by the
    openai SDK); a missing key fails here, before any work starts.
    """
    if config.provider == "openai":
        if not config.model:
            raise ConfigError("llm.model is required with provider 'openai'; set it, e.g. "
                              "AUTOLABEL_LLM__MODEL=gpt-4o-mini")
        return OpenAIClient(config.model, base_url=config.base_url, timeout=config.timeout,
                            max_retries=config.max_retries, concurrency=config.concurrency,
                            prices=config.prices)
    return LocalClient(config.model or DEFAULT_MODEL)


def make_client(
    config: LLMConfig, database: Database | None = None, *, run_id: int | None = None,
    use_cache: bool = True,
) -> LLMClient:
    """The client the config asks for; recorded, cached and budgeted when given a database
    or a budget, bare otherwise.

    ``config.temperature`` is a per-call setting: callers pass it to each call.
    """
    client = _backend(config)
    if database is None and config.max_cost is None and config.max_total_tokens is None:
        return client
    return RecordingClient(client, database, run_id=run_id, use_cache=use_cache,
                           max_cost=config.max_cost, max_tokens_total=config.max_total_tokens)


def recorded_client(
    config: Config, database: Database | None, *, run_id: int | None = None,
    use_cache: bool = True,
) -> RecordingClient:
    """A run's one LLM client: every call in ``llm_calls`` (``run_id`` on each row), identical
    requests answered from it unless ``use_cache`` is false, and ``llm.max_cost`` /
    ``llm.max_total_tokens`` as budgets for the whole run.

    Cheap to build: a run with nothing to do, or whose requests are all cached, never loads
    the local model.
    """
    return RecordingClient(_backend(config.llm), database, run_id=run_id, use_cache=use_cache,
                           max_cost=config.llm.max_cost,
                           max_tokens_total=config.llm.max_total_tokens)
