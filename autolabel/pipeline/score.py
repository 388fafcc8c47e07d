"""The score stage: every ok explanation on held-out (test-split) data, each beside its floor.

The stage sees scorers only through :class:`~autolabel.scoring.Scorer`: ``name`` and
``simulator`` key the stored scores, ``score`` does the work. Building a scorer loads nothing
(the ``auto`` simulator's sanity verdict comes from its disk cache), so which explanations still
lack a score is decided before any model loads, and a finished stage costs a few queries.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autolabel.config import Config
from autolabel.db import Database, Explanation
from autolabel.examples import TextExample, TokenDecoder
from autolabel.llm import LLMClient
from autolabel.loading import Progress, RunContext, _noop
from autolabel.pipeline.explain import feature_context
from autolabel.scoring import Scorer, ScoreResult, make_scorer, needs_llm
from autolabel.store.explanations import ok_explanations
from autolabel.store.features import load_examples
from autolabel.store.scores import add_score, mark_best, scored_keys

FALLBACK_FLOOR_TEXT = "words related to cooking and kitchen utensils"


@dataclass
class ScoreSummary:
    """What a score stage did, including which simulator it used and why."""

    sae: str
    scored: int
    skipped: int
    simulator: str
    sanity: dict[str, Any] | None
    mean_score: float | None
    mean_floor: float | None
    seconds: float


@dataclass
class _Tally:
    """Running totals over all scorers: counts and (score, floor) pairs for the means."""

    scored: int = 0
    skipped: int = 0
    pairs: list[tuple[float, float]] = field(default_factory=list)

    def mean(self, i: int) -> float | None:
        return sum(p[i] for p in self.pairs) / len(self.pairs) if self.pairs else None


def test_sequences(database: Database, feature_id: int,
                   decode: TokenDecoder) -> tuple[list[TextExample], float]:
    """Held-out scoring data (test top + quantile + random) and the train max for scaling.

    Only ``split == 'test'`` rows are returned: documents are split by hash before collection,
    so nothing here was shown to an explainer.
    """
    with database.session() as session:
        test = load_examples(session, feature_id, split="test")
        train = load_examples(session, feature_id, split="train", kinds=("top",))
    scale = max((e.max_activation for e in train), default=0.0)
    return [e.to_text(decode) for e in test], scale


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
                client: LLMClient | None = None, progress: Progress = _noop,
                ctx: RunContext | None = None) -> ScoreSummary:
    """Score ok explanations on held-out data, each beside its floor; mark the best per feature.

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
    tally = _Tally()
    for scorer in scorers:
        _score_all(config, database, scorer, explanations, lambda: ctx.decoder(model_id),
                   ctx.run_id, tally, progress)
    with database.session() as session:
        mark_best(session, ids)
    sim_name = next((s.simulator for s in scorers if s.simulator), "")
    sanity = next((dataclasses.asdict(s.sanity) for s in scorers if s.sanity is not None), None)
    return ScoreSummary(sae.name, tally.scored, tally.skipped, sim_name, sanity, tally.mean(0),
                        tally.mean(1), time.perf_counter() - start)


def _score_all(config: Config, database: Database, scorer: Scorer,
               explanations: Sequence[Explanation], decoder: Callable[[], TokenDecoder],
               run_id: int | None, tally: _Tally, progress: Progress) -> None:
    """Score each explanation lacking this scorer's score; one transaction per explanation.

    What is done is read under the scorer's identity before any sequence is decoded, so the
    tokenizer, too, loads only when something is left to score.
    """
    with database.session() as session:
        done = scored_keys(session, [e.id for e in explanations], scorer.name, scorer.simulator)
    todo = [e for e in explanations if e.id not in done]
    tally.skipped += len(explanations) - len(todo)
    cache: dict[int, tuple[list[TextExample], float]] = {}
    for i, expl in enumerate(todo):
        if expl.feature_id not in cache:
            cache[expl.feature_id] = test_sequences(database, expl.feature_id, decoder())
        seqs, scale = cache[expl.feature_id]
        wrong = pick_floor_explanation(explanations, expl.feature_id, config.scoring.seed)
        wrong_text = (wrong.text or "") if wrong is not None else FALLBACK_FLOOR_TEXT
        result = scorer.score(expl.text or "", seqs, scale)  # ok explanations have text
        floor = scorer.score(wrong_text, seqs, scale)  # same scorer, same data, wrong text
        _store_score(database, expl.id, scorer, result, floor, wrong, run_id)
        tally.scored += 1
        if result.value is not None and floor.value is not None:
            tally.pairs.append((result.value, floor.value))
        progress(i + 1, len(todo))


def _store_score(database: Database, explanation_id: int, scorer: Scorer, result: ScoreResult,
                 floor: ScoreResult, wrong: Explanation | None, run_id: int | None) -> None:
    """One score row with its floor; failures are statuses with the details kept."""
    details = {**result.details, "floor": {"status": floor.status, "details": floor.details,
                                           "text": wrong.text if wrong else FALLBACK_FLOOR_TEXT}}
    with database.session() as session:
        add_score(session, explanation_id=explanation_id, scorer=scorer.name,
                  simulator=scorer.simulator, value=result.value, floor_value=floor.value,
                  floor_explanation_id=wrong.id if wrong is not None else None,
                  n_examples=result.n_examples, status=result.status, details=details,
                  run_id=run_id)
