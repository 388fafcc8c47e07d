"""The score stage: every ok explanation on held-out data, chosen on validation, reported on test.

Per (explanation, scorer) one score row holds (issue 13):

- ``validation_value``: the scorer on the **validation** split, the only number best-of-k
  chooses by (:func:`autolabel.store.labels.choose`);
- ``value``: the same scorer on the **test** split, the number reported for the label; its
  floor (the same scorer on another feature's explanation, same data), the null summary, the
  bootstrap CI and the verdict (:mod:`autolabel.scoring.trust`, no extra LLM call).

So the choice never looks at test, and the reported score is not the maximum of k noisy
estimates. A collection without validation examples (made before the split existed) gets no
validation value, and its labels say "selected on test".

Outages (transport or server failures) are stored as status ``error`` and re-scored by the next
run; the summary counts them (``failed``) so the CLI can exit 3. Score rows made before
migration 0009 get their null, CI and verdict from their stored predictions here, again
without an LLM call. The stage sees scorers only through :class:`~autolabel.scoring.Scorer`;
building one loads nothing, so a finished stage costs a few queries.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from autolabel.config import Config
from autolabel.db import Database, Explanation
from autolabel.examples import TextExample, TokenDecoder
from autolabel.executors import Executor, ExecutorError
from autolabel.executors.pools import ScoreItem, ScoreWorker, absorb, budgeted
from autolabel.llm import LLMClient
from autolabel.loading import Progress, RunContext, no_progress
from autolabel.pipeline.explain import feature_context
from autolabel.pipeline.trust import backfill_trust, trust_settings
from autolabel.scoring import (
    ScoredSplits,
    Scorer,
    ScoreResult,
    make_scorer,
    needs_llm,
    score_with_floor,
)
from autolabel.scoring.trust import RULE, TrustSettings, assess
from autolabel.scoring.types import ERROR, OK
from autolabel.store.explanations import ok_explanations
from autolabel.store.features import load_examples
from autolabel.store.scores import add_score, mark_best, scored_keys

FALLBACK_FLOOR_TEXT = "words related to cooking and kitchen utensils"


@dataclass
class ScoreSummary:
    """What a score stage did, including which simulator it used and why.

    ``failed``: scores left as outages (status ``error``, retried next run) — a stage with
    failures is partial (exit 3). ``verdicts``: verdict counts over this stage's new scores.
    """

    sae: str
    scored: int
    skipped: int
    simulator: str
    sanity: dict[str, Any] | None
    mean_score: float | None
    mean_floor: float | None
    seconds: float
    failed: int = 0
    backfilled: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)


@dataclass
class HeldOut:
    """A feature's held-out data: validation (to choose) and test (to report) sequences."""

    validation: list[TextExample]
    test: list[TextExample]
    scale: float  # max activation over the feature's train top examples


@dataclass
class _Tally:
    """Running totals over all scorers: counts and (score, floor) pairs for the means."""

    scored: int = 0
    skipped: int = 0
    failed: int = 0
    pairs: list[tuple[float, float]] = field(default_factory=list)
    verdicts: dict[str, int] = field(default_factory=dict)

    def mean(self, i: int) -> float | None:
        return sum(p[i] for p in self.pairs) / len(self.pairs) if self.pairs else None


def heldout_sequences(database: Database, feature_id: int, decode: TokenDecoder) -> HeldOut:
    """Validation and test sequences (top + quantile + random of each) and the train max.

    Documents are split by hash before collection, so nothing here was shown to an explainer,
    and no document is in both held-out splits.
    """
    with database.session() as session:
        validation = load_examples(session, feature_id, split="validation")
        test = load_examples(session, feature_id, split="test")
        train = load_examples(session, feature_id, split="train", kinds=("top",))
    scale = max((e.max_activation for e in train), default=0.0)
    return HeldOut([e.to_text(decode) for e in validation], [e.to_text(decode) for e in test],
                   scale)


def test_sequences(database: Database, feature_id: int,
                   decode: TokenDecoder) -> tuple[list[TextExample], float]:
    """Test-split sequences and the train max (what reported scores are computed on)."""
    held = heldout_sequences(database, feature_id, decode)
    return held.test, held.scale


def pick_floor_explanation(explanations: Sequence[Explanation], feature_id: int,
                           seed: int) -> Explanation | None:
    """A wrong explanation for the floor: another feature's, chosen reproducibly."""
    others = [e for e in explanations if e.feature_id != feature_id]
    if not others:
        return None
    return random.Random(seed * 1_000_003 + feature_id).choice(others)


def scoring_needs_llm(config: Config, scorer_names: Sequence[str]) -> bool:
    """Whether any of the scorers calls an LLM under this config (so a client is worth
    building); the scoring factory knows which do."""
    return any(needs_llm(name, config.scoring) for name in scorer_names)


def score_stage(config: Config, database: Database, *, sae_name: str | None = None,
                features: str | None = None, scorer_names: list[str] | None = None,
                use_cache: bool = True, run_id: int | None = None,
                client: LLMClient | None = None, progress: Progress = no_progress,
                ctx: RunContext | None = None,
                executor: Executor | None = None) -> ScoreSummary:
    """Score ok explanations on validation and test; mark the best per feature (validation).
    With a Ray ``executor`` the scoring itself runs on its actor pool (this process writes).

    Scorers are built only when there are explanations, and built lazily: a scorer loads its
    model on its first ``score``, which a stage with everything already scored never calls.
    """
    start = time.perf_counter()
    ctx = ctx or RunContext(config, database, run_id=run_id, use_cache=use_cache)
    sae, ids, model_id = feature_context(database, sae_name, features)
    with database.session() as session:
        explanations = ok_explanations(session, ids)
    names = scorer_names or list(config.scoring.scorers)
    if client is None and explanations and scoring_needs_llm(config, names):
        client = ctx.llm
    scorers = [make_scorer(name, config.scoring, client, lambda: ctx.embedder)
               for name in names] if explanations else []
    tally, settings = _Tally(), trust_settings(config)
    for scorer in scorers:
        _score_all(config, database, scorer, explanations, lambda: ctx.decoder(model_id),
                   ctx.run_id, tally, progress, settings, (executor, client))
    backfilled = backfill_trust(database, ids, settings)
    with database.session() as session:
        mark_best(session, ids)
    sim_name = next((s.simulator for s in scorers if s.simulator), "")
    sanity = next((dataclasses.asdict(s.sanity) for s in scorers if s.sanity is not None), None)
    return ScoreSummary(sae.name, tally.scored, tally.skipped, sim_name, sanity, tally.mean(0),
                        tally.mean(1), time.perf_counter() - start, tally.failed, backfilled,
                        tally.verdicts)


def _score_all(config: Config, database: Database, scorer: Scorer,
               explanations: Sequence[Explanation], decoder: Callable[[], TokenDecoder],
               run_id: int | None, tally: _Tally, progress: Progress,
               settings: TrustSettings, pool: tuple[Executor | None, Any] = (None, None)
               ) -> None:
    """Score each explanation lacking this scorer's score; one transaction per explanation.
    ``pool``: (executor, the run's LLM client); a Ray executor scores on its actor pool.

    What is done is read under the scorer's identity before any sequence is decoded, so the
    tokenizer, too, loads only when something is left to score.
    """
    with database.session() as session:
        done = scored_keys(session, [e.id for e in explanations], scorer.name, scorer.simulator)
    todo = [e for e in explanations if e.id not in done]
    tally.skipped += len(explanations) - len(todo)
    if pool[0] is not None and pool[0].name == "ray" and todo:
        job = _PoolJob(config, database, scorer, explanations, decoder, pool[1])
        _score_on_pool(job, pool[0], todo, run_id, tally, progress, settings)
        return
    cache: dict[int, HeldOut] = {}
    for i, expl in enumerate(todo):
        if expl.feature_id not in cache:
            cache[expl.feature_id] = heldout_sequences(database, expl.feature_id, decoder())
        wrong, wrong_text = _floor(explanations, expl, config.scoring.seed)
        _score_one(database, scorer, expl, cache[expl.feature_id], wrong, wrong_text, run_id,
                   tally, settings)
        progress(i + 1, len(todo))


def _floor(explanations: Sequence[Explanation], expl: Explanation,
           seed: int) -> tuple[Explanation | None, str]:
    """The wrong explanation scored as ``expl``'s floor (another feature's), and its text."""
    wrong = pick_floor_explanation(explanations, expl.feature_id, seed)
    return wrong, (wrong.text or "") if wrong is not None else FALLBACK_FLOOR_TEXT


def _score_one(database: Database, scorer: Scorer, expl: Explanation, held: HeldOut,
               wrong: Explanation | None, wrong_text: str, run_id: int | None, tally: _Tally,
               settings: TrustSettings) -> None:
    """Validation score, test score, floor (test) and trust of one explanation, stored."""
    scored = score_with_floor(scorer, expl.text or "", wrong_text, held.test, held.validation,
                              held.scale)  # ok explanations have text
    _store_scored(database, scorer, expl, scored, wrong, wrong_text, run_id, tally, settings)


def _store_scored(database: Database, scorer: Scorer, expl: Explanation,
                  scored: ScoredSplits,
                  wrong: Explanation | None, wrong_text: str, run_id: int | None,
                  tally: _Tally, settings: TrustSettings) -> None:
    """One explanation's (test, validation, floor) scores, its trust, stored in one go."""
    result, validation, floor = scored
    parts = [r for r in (result, validation, floor) if r is not None]
    outage = next((r for r in parts if r.status == ERROR), None)
    trust = (assess(result.truth, result.pred, result.value, floor.value, result.metric,
                    settings) if outage is None else None)
    details = {**result.details, "floor": _summary(floor, wrong_text),
               "validation": _summary(validation, None) if validation else None,
               "trust": {**trust.as_dict(), "rule": RULE, **dataclasses.asdict(settings)}
               if trust else None}
    status = ERROR if outage is not None else result.status
    if outage is not None:
        details["error"] = outage.details.get("error", "LLM call failed")
        tally.failed += 1
    with database.session() as session:
        add_score(session, explanation_id=expl.id, scorer=scorer.name,
                  simulator=scorer.simulator, value=result.value if status == OK else None,
                  floor_value=floor.value, floor_explanation_id=wrong.id if wrong else None,
                  n_examples=result.n_examples, status=status, details=details, run_id=run_id,
                  validation_value=validation.value if validation and not outage else None,
                  trust=trust.as_dict() if trust else None)
    tally.scored += 1
    if trust is not None:
        tally.verdicts[trust.verdict] = tally.verdicts.get(trust.verdict, 0) + 1
    if status == OK and result.value is not None and floor.value is not None:
        tally.pairs.append((result.value, floor.value))


@dataclass
class _PoolJob:
    """What scoring on an actor pool needs besides the explanations to score."""

    config: Config
    database: Database
    scorer: Scorer
    explanations: Sequence[Explanation]  # all ok ones (the floor is drawn among them)
    decoder: Callable[[], TokenDecoder]
    client: Any  # the run's LLM client: records the actors' calls, holds the budget


def _score_on_pool(job: _PoolJob, executor: Executor, todo: list[Explanation],
                   run_id: int | None, tally: _Tally, progress: Progress,
                   settings: TrustSettings) -> None:
    """``todo`` in chunks on Ray actors, each holding this scorer (and its LLM client) for its
    life; each chunk's scores are stored here, in order, exactly as the local loop does."""
    floors: dict[int, tuple[Explanation | None, str]] = {}
    factory = functools.partial(ScoreWorker, job.config.model_dump(mode="json"),
                                job.scorer.name)
    want, done, by_id = (job.scorer.name, job.scorer.simulator), 0, {e.id: e for e in todo}
    batches = budgeted(_score_items(job, todo, floors), job.client)
    for batch, reply in executor.map_batches(factory, "score", batches):
        if reply.identity != want:
            raise ExecutorError(f"a Ray worker chose scorer {reply.identity}, this process "
                                f"{want}; give every node the same config and cache")
        absorb(job.client, reply)
        for item, scored in zip(batch, reply.results, strict=True):
            expl = by_id[item.explanation_id]
            wrong, wrong_text = floors[expl.id]
            _store_scored(job.database, job.scorer, expl, scored, wrong, wrong_text, run_id,
                          tally, settings)
            done += 1
            progress(done, len(todo))


def _score_items(job: _PoolJob, todo: list[Explanation],
                 floors: dict[int, tuple[Explanation | None, str]]) -> Iterator[list[ScoreItem]]:
    """Chunks of explanations with their held-out data and floor text (decoded lazily)."""
    chunk, cache = max(1, job.config.collect.batch_size), {}
    for lo in range(0, len(todo), chunk):
        items = []
        for expl in todo[lo:lo + chunk]:
            if expl.feature_id not in cache:
                cache[expl.feature_id] = heldout_sequences(job.database, expl.feature_id,
                                                           job.decoder())
            floors[expl.id] = _floor(job.explanations, expl, job.config.scoring.seed)
            held = cache[expl.feature_id]
            items.append(ScoreItem(expl.id, expl.text or "", held.validation, held.test,
                                   held.scale, floors[expl.id][1]))
        yield items


def _summary(result: ScoreResult | None, text: str | None) -> dict[str, Any] | None:
    """A secondary score (floor, validation) as kept in the main score's details."""
    if result is None:
        return None
    out: dict[str, Any] = {"status": result.status, "value": result.value,
                           "n_examples": result.n_examples, "details": result.details}
    if text is not None:
        out["text"] = text
    return out
