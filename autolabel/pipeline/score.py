"""The score stage: every ok explanation on held-out (test-split) data, each beside its floor.

Which explanations still lack a score is decided before any scorer loads its model, so a
finished stage costs a few queries.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from autolabel import scorers
from autolabel.config import Config
from autolabel.db import Database
from autolabel.errors import ConfigError
from autolabel.examples import TextExample, TokenDecoder
from autolabel.llm import LLMClient
from autolabel.loading import Progress, RunContext, _noop
from autolabel.pipeline.explain import feature_context
from autolabel.store import add_score, load_examples, mark_best, ok_explanations, scored_keys

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


def pick_floor_explanation(explanations: list[Any], feature_id: int, seed: int) -> Any | None:
    """A wrong explanation for the floor: another feature's, chosen reproducibly."""
    others = [e for e in explanations if e.feature_id != feature_id]
    if not others:
        return None
    return random.Random(seed * 1_000_003 + feature_id).choice(others)


def scoring_needs_llm(config: Config, scorer_names: list[str]) -> bool:
    """Whether scoring calls an LLM (any non-simulation scorer, or a non-embedding simulator)."""
    return (any(n != "simulation" for n in scorer_names)
            or config.scoring.simulator != "embedding")


def _make_scorer(config: Config, name: str, client: LLMClient | None,
                 ctx: RunContext) -> tuple[Any, dict[str, Any] | None]:
    """A scorer object; simulation picks its simulator (and may run the sanity check)."""
    if name == "simulation":
        simulator, report = scorers.choose_simulator(config.scoring.simulator, client,
                                                     lambda: ctx.embedder)
        return scorers.SimulationScorer(simulator), (report.__dict__ if report else None)
    if client is None:
        raise ConfigError(f"the {name} scorer needs an LLM; configure [llm]")
    cls = scorers.DetectionScorer if name == "detection" else scorers.FuzzingScorer
    return cls(client, seed=config.scoring.seed), None


def score_stage(config: Config, database: Database, *, sae_name: str | None = None,
                features: str | None = None, scorer_names: list[str] | None = None,
                use_cache: bool = True, run_id: int | None = None,
                client: LLMClient | None = None, progress: Progress = _noop,
                ctx: RunContext | None = None) -> ScoreSummary:
    """Score ok explanations on held-out data, each beside its floor; mark the best per feature."""
    start = time.perf_counter()
    ctx = ctx or RunContext(config, database, run_id=run_id, use_cache=use_cache)
    sae, ids, model_id = feature_context(database, sae_name, features)
    with database.session() as session:
        explanations = ok_explanations(session, ids)
    names = scorer_names or list(config.scoring.scorers)
    if client is None and scoring_needs_llm(config, names):
        client = ctx.llm
    totals = {"scored": 0, "skipped": 0}
    values: list[tuple[float, float]] = []
    sim_name, sanity = "", None
    for name in names:
        scorer, report = _make_scorer(config, name, client, ctx)
        if name == "simulation":
            sim_name, sanity = scorer.simulator.name, report
        _score_all(config, database, scorer, name, explanations,
                   lambda: ctx.decoder(model_id), ctx.run_id, totals, values, progress)
    with database.session() as session:
        mark_best(session, ids)
    mean = (sum(v for v, _ in values) / len(values)) if values else None
    floor = (sum(f for _, f in values) / len(values)) if values else None
    return ScoreSummary(sae.name, totals["scored"], totals["skipped"], sim_name, sanity, mean,
                        floor, time.perf_counter() - start)


def _score_all(config: Config, database: Database, scorer: Any, name: str,
               explanations: list[Any], decoder: Any, run_id: int | None,
               totals: dict[str, int], values: list[tuple[float, float]],
               progress: Progress) -> None:
    """Score each explanation lacking this scorer's score; one transaction per explanation."""
    sim = scorer.simulator.name if name == "simulation" else ""
    with database.session() as session:
        done = scored_keys(session, [e.id for e in explanations], name, sim)
    todo = [e for e in explanations if e.id not in done]
    totals["skipped"] += len(explanations) - len(todo)
    cache: dict[int, tuple[list[TextExample], float]] = {}
    for i, expl in enumerate(todo):
        if expl.feature_id not in cache:
            cache[expl.feature_id] = test_sequences(database, expl.feature_id, decoder())
        seqs, scale = cache[expl.feature_id]
        wrong = pick_floor_explanation(explanations, expl.feature_id, config.scoring.seed)
        result, floor = _score_pair(scorer, name, expl.text, wrong, seqs, scale)
        _store_score(database, expl.id, name, sim, result, floor, wrong, run_id)
        totals["scored"] += 1
        if result.value is not None and floor.value is not None:
            values.append((result.value, floor.value))
        progress(i + 1, len(todo))


def _score_pair(scorer: Any, name: str, text: str, wrong: Any, seqs: list[TextExample],
                scale: float) -> tuple[Any, Any]:
    """The explanation's score and its floor (same scorer, same data, wrong explanation)."""
    wrong_text = wrong.text if wrong is not None else FALLBACK_FLOOR_TEXT
    if name == "simulation":
        return scorer.score(text, seqs, scale), scorer.score(wrong_text, seqs, scale)
    active = [s for s in seqs if s.kind != "random"]
    inactive = [s for s in seqs if s.kind == "random"]
    return scorer.score(text, active, inactive), scorer.score(wrong_text, active, inactive)


def _store_score(database: Database, explanation_id: int, scorer: str, simulator: str,
                 result: Any, floor: Any, wrong: Any, run_id: int | None) -> None:
    """One score row with its floor; failures are statuses with the details kept."""
    details = {**result.details, "floor": {"status": floor.status, "details": floor.details,
                                           "text": wrong.text if wrong else FALLBACK_FLOOR_TEXT}}
    with database.session() as session:
        add_score(session, explanation_id=explanation_id, scorer=scorer, simulator=simulator,
                  value=result.value, floor_value=floor.value,
                  floor_explanation_id=wrong.id if wrong is not None else None,
                  n_examples=result.n_examples, status=result.status, details=details,
                  run_id=run_id)
