"""Explain and score stages on tiny artefacts: held-out scoring, floors, statuses, best-of-k."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from autolabel import db as dbm
from autolabel.cli import cli
from autolabel.config import Config, load_config
from autolabel.llm import FakeClient
from autolabel.pipeline import collect_stage, explain_stage, score_stage
from tests.tiny import tiny_corpus, tiny_model_dir, tiny_sae_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, dbm.Database, Path]:
    root = tmp_path_factory.mktemp("stages")
    model, sae = tiny_model_dir(root / "model"), tiny_sae_dir(root / "sae")
    corpus = tiny_corpus(root / "corpus.txt")
    overrides = {"subject.model": str(model), "subject.layer": 2, "sae.sae": str(sae),
                 "corpus.source": str(corpus), "corpus.window": 16, "collect.tokens": 3000,
                 "collect.features": "0:6", "scoring.simulator": "embedding",
                 "search.embedding_model": "hash", "explain.explainers": ["tokens", "llm"]}
    config = load_config(overrides=overrides, environ={})
    db_path = root / "stages.db"
    database = dbm.open_database(str(db_path))
    collect_stage(config, database)
    client = FakeClient(default="the word 'the' and other short function words")
    client.enqueue("I cannot help with that.", "Token\t10\nToken\t3")
    explain_stage(config, database, client=client)
    score_stage(config, database)
    return config, database, db_path


def rows(database: dbm.Database, model: type) -> list[Any]:
    with database.session() as s:
        return list(s.scalars(select(model)))


def test_failures_are_statuses_with_raw_reply(setup: tuple[Config, dbm.Database, Path]) -> None:
    _, database, _ = setup
    expl = rows(database, dbm.Explanation)
    statuses = {e.status for e in expl if e.explainer == "llm"}
    assert {"refused", "rejected", "ok"} <= statuses  # the echoed records: rejected (gate)
    for e in expl:
        if e.status != "ok":
            assert e.text is None and (e.raw_reply or e.error)
        else:
            assert e.text


def test_scores_are_held_out_and_have_floors(setup: tuple[Config, dbm.Database, Path]) -> None:
    _, database, _ = setup
    expl = {e.id: e for e in rows(database, dbm.Explanation)}
    examples = rows(database, dbm.Example)
    scores = rows(database, dbm.Score)
    assert scores and all(s.simulator.startswith("embedding:") for s in scores)
    for score in scores:
        fid = expl[score.explanation_id].feature_id
        train_docs = {x.document_id for x in examples if x.feature_id == fid
                      and x.split == "train"}
        scored_docs = set(score.details["document_ids"])
        assert scored_docs and not scored_docs & train_docs  # never a train example
        if score.value is not None:
            assert score.floor_value is not None
            floor = expl[score.floor_explanation_id]
            assert floor.feature_id != fid  # the floor is another feature's explanation


def test_one_best_per_scored_feature(setup: tuple[Config, dbm.Database, Path]) -> None:
    _, database, _ = setup
    expl = rows(database, dbm.Explanation)
    scored = {e.feature_id for e in expl
              if any(s.explanation_id == e.id and s.value is not None
                     for s in rows(database, dbm.Score))}
    for fid in scored:
        assert sum(e.is_best for e in expl if e.feature_id == fid) == 1


def test_rerun_is_a_no_op(setup: tuple[Config, dbm.Database, Path]) -> None:
    config, database, _ = setup
    before = (len(rows(database, dbm.Explanation)), len(rows(database, dbm.Score)))
    again = explain_stage(config, database, client=FakeClient(default="unused"))
    assert again.created == 0
    assert score_stage(config, database).scored == 0
    assert (len(rows(database, dbm.Explanation)), len(rows(database, dbm.Score))) == before


def test_stats_and_show_display_floors(setup: tuple[Config, dbm.Database, Path]) -> None:
    _, database, db_path = setup
    runner = CliRunner()
    stats = runner.invoke(cli, ["--db", str(db_path), "--json", "stats"])
    assert stats.exit_code == 0, stats.output
    data = json.loads(stats.stdout)
    assert data and all("floor_mean" in r for r in data)
    shown = runner.invoke(cli, ["--db", str(db_path), "features", "show", "sae:0"])
    assert shown.exit_code == 0, shown.output
    assert "explanations" in shown.output and "(" in shown.output
