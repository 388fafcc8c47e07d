"""Explain and score as a pool of Ray actors over feature batches (issue 17.3–17.4).

Each pool actor builds its worker once (an explainer or a scorer, with its own LLM client, and
a local model when the config names one) and keeps it for its whole life. The actor never
touches the database: its client (:class:`CallLog`) keeps the ``llm_calls`` rows it would have
written and hands them back with each batch's results. The driver then, and only the driver,

* writes those rows and counts their spending against the run's one budgeted client
  (``RecordingClient.absorb``), so ``--max-cost`` / ``--max-llm-tokens`` hold across the
  cluster: before each batch is handed out the budget is checked, so a run overspends by at
  most the batches already in flight (two per actor);
* stores the batch's candidates or scores in the same idempotent transactions as a local run.

A batch is a pure function of its arguments, so when an actor's process dies Ray restarts the
actor and re-runs the batch on it (``max_restarts`` / ``max_task_retries``), with no bookkeeping
of ours; nothing of the lost attempt reached the database. Actors do not read the ``llm_calls``
cache (it lives in the driver's database): features already stored are never sent at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from autolabel.config import Config
from autolabel.embed import get_embedder
from autolabel.examples import TextExample
from autolabel.explain import Candidate, LLMExplainer
from autolabel.llm import LLMClient, make_client
from autolabel.llm.recording import RecordingClient
from autolabel.scoring import make_scorer, needs_llm, score_with_floor
from autolabel.store.llm_calls import NewCall

SPENT_KEYS = ("calls", "cached", "tokens_in", "tokens_out", "cost")


class CallLog(RecordingClient):
    """An actor's LLM client: records nothing itself, keeps each call's row for the driver."""

    def __init__(self, inner: LLMClient) -> None:
        super().__init__(inner, None)
        self.calls: list[NewCall] = []
        self._reported = dict.fromkeys(SPENT_KEYS, 0.0)

    def _store(self, request: Any, completion: Any, error: BaseException | None) -> int | None:
        """Keep the row; the call's id is a stand-in, ``-(its place in this batch + 1)``,
        which the driver swaps for the real id once it has written the row (:func:`absorb`)."""
        with self._lock:
            self.calls.append(self._new_call(request, completion, error))
            return -len(self.calls)

    def take(self) -> tuple[list[NewCall], dict[str, float]]:
        """The rows and spending since the last ``take`` (what one batch cost)."""
        totals = self.totals
        with self._lock:
            calls, self.calls = self.calls, []
        spent = {k: totals[k] - self._reported[k] for k in SPENT_KEYS}
        self._reported = {k: totals[k] for k in SPENT_KEYS}
        return calls, spent


def actor_client(config: Config) -> CallLog:
    """The configured backend, bare (no database, no budget: the driver keeps both)."""
    bare = config.llm.model_copy(update={"max_cost": None, "max_total_tokens": None})
    return CallLog(make_client(bare))


@dataclass
class PoolReply:
    """One batch's results, with the LLM calls it made, what they cost and how many failed."""

    results: list[Any]
    calls: list[NewCall] = field(default_factory=list)
    spent: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    identity: tuple[str, str] = ("", "")  # the scorer's (name, simulator), for a check


@dataclass
class ExplainBatch:
    """Features to explain (ids, for the driver) and their decoded train examples."""

    ids: list[int]
    texts: list[list[TextExample]]


class ExplainWorker:
    """An LLM explainer and its client, built once per actor from the run's config."""

    def __init__(self, config_data: dict[str, Any], options: dict[str, Any]) -> None:
        config = Config.model_validate(config_data)
        self.client = actor_client(config)
        self.explainer = LLMExplainer(self.client, **options)

    def explain(self, batch: ExplainBatch) -> PoolReply:
        """``LLMExplainer.explain_many`` on one batch of features."""
        before = self.explainer.failed_calls
        results = self.explainer.explain_many(batch.texts)
        calls, spent = self.client.take()
        return PoolReply(results, calls, spent, self.explainer.failed_calls - before)


@dataclass
class ScoreItem:
    """One explanation to score: its text, its feature's held-out data, the floor's text."""

    explanation_id: int
    text: str
    validation: list[TextExample]
    test: list[TextExample]
    scale: float
    wrong_text: str


class ScoreWorker:
    """One scorer (and its LLM client or simulator) built once per actor from the config."""

    def __init__(self, config_data: dict[str, Any], name: str) -> None:
        config = Config.model_validate(config_data)
        self.client = actor_client(config) if needs_llm(name, config.scoring) else None
        embedder: list[Any] = []

        def embedder_provider() -> Any:
            if not embedder:
                embedder.append(get_embedder(config.search.embedding_model))
            return embedder[0]

        self.scorer = make_scorer(name, config.scoring, self.client, embedder_provider)

    def score(self, items: Sequence[ScoreItem]) -> PoolReply:
        """Per item: the test score, the validation score (None without validation data) and
        the floor (the wrong text on the same test data), exactly as the local stage does."""
        results = [score_with_floor(self.scorer, item.text, item.wrong_text, item.test,
                                    item.validation, item.scale) for item in items]
        calls, spent = self.client.take() if self.client is not None else ([], {})
        return PoolReply(results, calls, spent,
                         identity=(self.scorer.name, self.scorer.simulator))


def budgeted(batches: Iterable[Any], client: Any) -> Iterator[Any]:
    """``batches``, checking the run's budget before handing out each one (a client without a
    budget, e.g. a test's fake, is not checked)."""
    check = getattr(client, "check_budget", None)
    for batch in batches:
        if check is not None:
            check()
        yield batch


def absorb(client: Any, reply: PoolReply) -> list[int | None]:
    """Record a batch's LLM calls and spending in the driver's client (when it records);
    the new rows' ids, in the order of ``reply.calls``."""
    take = getattr(client, "absorb", None)
    return list(take(reply.calls, reply.spent)) if take is not None else [None] * len(
        reply.calls)


def relinked(candidates: list[list[Candidate]], ids: list[int | None]) -> list[list[Candidate]]:
    """Candidates citing their calls' real ``llm_calls`` ids instead of the actor's
    stand-ins (so the gate's re-check finds each candidate's prompt, as in a local run)."""
    def fix(cand: Candidate) -> Candidate:
        if cand.call_id is None or cand.call_id >= 0:
            return cand
        return dataclasses.replace(cand, call_id=ids[-cand.call_id - 1])

    return [[fix(c) for c in cands] for cands in candidates]
