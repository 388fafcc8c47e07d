"""The score stage on three splits (issue 13.2): every candidate scored on validation (to
choose) and test (to report), from disjoint documents; a database made by the previous release
(no validation split) is upgraded, gets verdicts without an LLM call, and says "selected on
test" for every label."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from autolabel import db as dbm
from autolabel.config import Config, load_config
from autolabel.loading import RunContext
from autolabel.pipeline import collect_stage, explain_stage, score_stage
from autolabel.store.labels import feature_labels
from tests.tiny import tiny_corpus, tiny_model_dir, tiny_sae_dir


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, dbm.Database]:
    root = tmp_path_factory.mktemp("splits")
    model, sae = tiny_model_dir(root / "model"), tiny_sae_dir(root / "sae")
    overrides = {"subject.model": str(model), "subject.layer": 2, "sae.sae": str(sae),
                 "corpus.source": str(tiny_corpus(root / "corpus.txt")), "corpus.window": 16,
                 "collect.tokens": 3000, "collect.features": "0:6",
                 "scoring.simulator": "embedding", "search.embedding_model": "hash",
                 "explain.explainers": ["tokens"]}
    config = load_config(overrides=overrides, environ={})
    database = dbm.open_database(str(root / "splits.db"))
    collect_stage(config, database)
    explain_stage(config, database)
    summary = score_stage(config, database)
    assert summary.scored > 0 and summary.failed == 0
    return config, database


def test_validation_and_test_scores_come_from_disjoint_documents(
        scored: tuple[Config, dbm.Database]) -> None:
    _, database = scored
    with database.session() as s:
        rows = s.query(dbm.Score).all()
        train_docs = {e.document_id for e in s.query(dbm.Example).filter_by(split="train")}
    assert rows and all(r.status == "ok" for r in rows)
    for row in rows:
        assert row.validation_value is not None and row.value is not None
        test_docs = set(row.details["document_ids"])
        val_docs = set(row.details["validation"]["details"]["document_ids"])
        assert test_docs and val_docs and not test_docs & val_docs
        assert not (test_docs | val_docs) & train_docs
        assert row.verdict in {"trusted", "weak", "at_floor"}
        assert row.null_n and row.null_n >= 8 and row.ci_low is not None
        assert row.details["trust"]["rule"] and row.details["trust"]["n_boot"] == 1000


def test_labels_are_chosen_on_validation(scored: tuple[Config, dbm.Database]) -> None:
    _, database = scored
    with database.session() as s:
        fids = [f.id for f in s.query(dbm.Feature)]
        labels = feature_labels(s, fids)
        best = {e.feature_id: e.id for e in s.query(dbm.Explanation).filter_by(is_best=True)}
    chosen = [lab for lab in labels.values() if lab.explanation_id is not None]
    assert chosen and all(lab.selected_on == "validation" for lab in chosen if lab.score)
    assert {lab.feature_id: lab.explanation_id for lab in chosen if lab.score} == best


def test_rescoring_fills_nothing_and_loads_nothing(scored: tuple[Config, dbm.Database]) -> None:
    config, database = scored
    ctx = RunContext(config, database)
    again = score_stage(config, database, ctx=ctx)
    assert (again.scored, again.backfilled, again.failed) == (0, 0, 0)
    assert not ctx.loaded


PRISTINE = Path("/tmp/base_pristine.db")


@pytest.mark.skipif(not PRISTINE.exists(), reason="needs the previous release's database")
def test_database_of_the_previous_release_gets_verdicts_and_legacy_labels(
        tmp_path: Path) -> None:
    """Upgraded in place; its 115 scores get a null, CI and verdict from their stored
    predictions (no LLM, no model loaded); every label says it was chosen on test."""
    db = tmp_path / "legacy.db"
    with sqlite3.connect(PRISTINE) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    database = dbm.open_database(str(db))
    config = load_config(overrides={"scoring.simulator": "embedding"}, environ={})
    ctx = RunContext(config, database)
    summary = score_stage(config, database, ctx=ctx)
    assert summary.scored == 0 and summary.backfilled >= 100
    assert not ctx.loaded  # nothing to score: no embedder, tokenizer or LLM
    with database.session() as s:
        rows = s.query(dbm.Score).all()
        labels = feature_labels(s, [f.id for f in s.query(dbm.Feature)])
    assert all(r.verdict is not None for r in rows)
    ok = [r for r in rows if r.status == "ok"]
    assert ok and all(r.null_n and r.ci_low is not None for r in ok)
    assert {r.verdict for r in rows if r.status != "ok"} <= {"unscored"}
    assert len(labels) == 64
    scored_labels = [lab for lab in labels.values() if lab.score is not None]
    assert scored_labels and all(lab.selected_on == "test" for lab in scored_labels)
    again = score_stage(config, database, ctx=RunContext(config, database))
    assert again.backfilled == 0
    database.close()
