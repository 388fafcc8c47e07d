"""Collection end to end through the CLI on tiny real artefacts (model dir, SAE dir, corpus)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from autolabel import db as dbm
from autolabel.cli import cli
from tests.tiny import tiny_corpus, tiny_model_dir, tiny_sae_dir


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {"model": tiny_model_dir(root / "model"), "sae": tiny_sae_dir(root / "sae"),
            "corpus": tiny_corpus(root / "corpus.txt")}


def collect_args(a: dict[str, Path], db: Path, *extra: str) -> list[str]:
    return ["--db", str(db), "collect", "--model", str(a["model"]), "--layer", "2",
            "--sae", str(a["sae"]), "--corpus", str(a["corpus"]), "--window", "16",
            "--tokens", "3k", *extra]


def count(db: Path, model: type) -> int:
    database = dbm.open_database(str(db))
    with database.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_collect_stores_examples_and_is_idempotent(artefacts: dict[str, Path], tmp_path: Path,
                                                    runner: CliRunner) -> None:
    db = tmp_path / "c.db"
    first = runner.invoke(cli, collect_args(artefacts, db, "--features", "0:8"))
    assert first.exit_code == 0, first.output
    assert count(db, dbm.Feature) == 8
    n_examples = count(db, dbm.Example)
    assert n_examples > 0
    again = runner.invoke(cli, ["--json", *collect_args(artefacts, db, "--features", "0:8")])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["already_done"] == 8 and summary["tokens"] == 0
    assert count(db, dbm.Example) == n_examples


def test_collect_incremental_and_force(artefacts: dict[str, Path], tmp_path: Path,
                                       runner: CliRunner) -> None:
    db = tmp_path / "i.db"
    assert runner.invoke(cli, collect_args(artefacts, db, "--features", "0:4")).exit_code == 0
    more = runner.invoke(cli, ["--json", *collect_args(artefacts, db, "--features", "0:6")])
    assert json.loads(more.stdout)["already_done"] == 4
    assert count(db, dbm.Feature) == 6
    before = count(db, dbm.Example)
    forced = runner.invoke(cli, ["--json", *collect_args(artefacts, db, "--features", "0:6",
                                                          "--force")])
    assert json.loads(forced.stdout)["already_done"] == 0
    assert count(db, dbm.Example) == before  # replaced, not duplicated


def test_examples_respect_splits(artefacts: dict[str, Path], tmp_path: Path,
                                 runner: CliRunner) -> None:
    db = tmp_path / "s.db"
    assert runner.invoke(cli, collect_args(artefacts, db, "--features", "0:8")).exit_code == 0
    database = dbm.open_database(str(db))
    with database.session() as s:
        rows = s.execute(select(dbm.Example.feature_id, dbm.Example.split, dbm.Example.kind,
                                dbm.Example.document_id, dbm.Example.max_activation)).all()
    by_split: dict[str, set[str]] = {"train": set(), "validation": set(), "test": set()}
    for _, split, kind, doc, max_act in rows:
        by_split[split].add(doc)
        if kind == "random":
            assert split in ("validation", "test") and max_act == 0  # held-out only
    assert by_split["train"] and by_split["validation"] and by_split["test"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["train"] & by_split["validation"]
    assert not by_split["validation"] & by_split["test"]


def test_features_list_and_show(artefacts: dict[str, Path], tmp_path: Path,
                                runner: CliRunner) -> None:
    db = tmp_path / "f.db"
    assert runner.invoke(cli, collect_args(artefacts, db, "--features", "0:4")).exit_code == 0
    listed = runner.invoke(cli, ["--db", str(db), "--json", "features", "list"])
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    assert data["total"] == 4 and data["features"][0]["feature"] == "sae:0"
    firing = max(data["features"], key=lambda f: f["density"])
    shown = runner.invoke(cli, ["--db", str(db), "features", "show", firing["feature"]])
    assert shown.exit_code == 0, shown.output
    assert "density" in shown.output and "train · top" in shown.output
    as_json = json.loads(runner.invoke(cli, ["--db", str(db), "--json", "features", "show",
                                             firing["feature"]]).stdout)
    top = [e for e in as_json["examples"] if e["kind"] == "top"]
    assert top and all(len(e["tokens"]) == len(e["activations"]) for e in top)
    assert top[0]["tokens"][0] == "<bos>"


def test_bad_inputs_are_one_line_errors(artefacts: dict[str, Path], tmp_path: Path,
                                        runner: CliRunner) -> None:
    db = tmp_path / "e.db"
    bad_range = runner.invoke(cli, collect_args(artefacts, db, "--features", "0:999"))
    assert bad_range.exit_code != 0 and "0..31" in bad_range.stderr
    wrong_layer = runner.invoke(cli, ["--db", str(db), "collect", "--model",
                                      str(artefacts["model"]), "--layer", "1", "--sae",
                                      str(artefacts["sae"]), "--corpus", str(artefacts["corpus"])])
    assert wrong_layer.exit_code != 0 and wrong_layer.stderr.startswith("Error:")
    assert wrong_layer.stderr.count("\n") == 1
    show_missing = runner.invoke(cli, ["--db", str(db), "features", "show", "sae:3"])
    assert show_missing.exit_code != 0 and "Error:" in show_missing.stderr
    assert count(db, dbm.Example) == 0


def test_default_sae_is_trained_once_then_loaded(artefacts: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from autolabel.config import load_config
    from autolabel.loading import load_subject_for, resolve_sae

    monkeypatch.setenv("AUTOLABEL_CACHE_DIR", str(tmp_path / "cache"))
    config = load_config(overrides={
        "subject.model": str(artefacts["model"]), "subject.layer": 2, "sae.sae": "default",
        "sae.d_sae": 16, "sae.k": 4, "sae.train_tokens": 1500, "sae.eval_tokens": 500,
        "corpus.source": str(artefacts["corpus"]), "corpus.window": 16}, environ={})
    subject = load_subject_for(config)
    first, metrics = resolve_sae(config, subject)
    assert first.source == "default" and first.d_sae == 16
    assert metrics is not None and metrics["n_train_tokens"] == 1500
    again, _ = resolve_sae(config, subject)
    assert again.content_hash == first.content_hash  # loaded from the cache, not retrained


@pytest.mark.slow
def test_real_gemma_fresh_sae_on_python_docs(tmp_path: Path, runner: CliRunner,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The real offline model end to end: train a small SAE, collect on python-docs, show."""
    monkeypatch.setenv("AUTOLABEL_SAE__EVAL_TOKENS", "10000")
    db, sae_dir = tmp_path / "real.db", tmp_path / "sae"
    trained = runner.invoke(cli, ["--db", str(db), "--json", "sae", "train", "--corpus",
                                  "python-docs", "--d-sae", "512", "--k", "16", "--tokens", "20k",
                                  "--out", str(sae_dir)])
    assert trained.exit_code == 0, trained.output
    report = json.loads(trained.stdout)
    # 20k training tokens: this checks the plumbing; the quality bar is in test_saes.py
    assert report["explained_variance"] > 0.3 and report["l0"] > 0
    collected = runner.invoke(cli, ["--db", str(db), "--json", "collect", "--sae", str(sae_dir),
                                    "--corpus", "python-docs", "--features", "0:32", "--tokens",
                                    "20k"])
    assert collected.exit_code == 0, collected.output
    assert json.loads(collected.stdout)["features"] == 32
    listed = json.loads(runner.invoke(cli, ["--db", str(db), "--json", "features", "list"]).stdout)
    busiest = max(listed["features"], key=lambda f: f["density"])
    assert busiest["density"] > 0
    shown = runner.invoke(cli, ["--db", str(db), "--json", "features", "show", busiest["feature"]])
    top = [e for e in json.loads(shown.stdout)["examples"] if e["kind"] == "top"]
    assert top and max(top[0]["activations"]) == pytest.approx(top[0]["max_activation"], rel=1e-4)
    assert any(t.strip() for t in top[0]["tokens"][1:])  # real decoded text, not ids
