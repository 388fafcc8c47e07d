"""Issue 18.2 through the real CLI and a real HTTP server on 127.0.0.1: an LLM outage during
``autolabel score`` is a retryable status and exit 3, never a frozen ``parse_error``; the next
run against a healthy server scores everything, with the same values as a run that never saw
the outage."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from autolabel.cli import cli
from tests.llm.outage_server import OutageServer, outage_server
from tests.tiny import tiny_corpus, tiny_model_dir, tiny_sae_dir

# 1 retry and a 1 s timeout keep the outages short; the breaker opens after 5 failed calls.
ENV = {"AUTOLABEL_LLM__MAX_RETRIES": "1", "AUTOLABEL_LLM__TIMEOUT": "1",
       "AUTOLABEL_LLM__CONCURRENCY": "1", "OPENAI_API_KEY": "sk-test"}


def tiny_config(root: Path, explainer: str) -> Path:
    """A config over four features of the tiny model, SAE and corpus under ``root``."""
    model, sae = tiny_model_dir(root / "model"), tiny_sae_dir(root / "sae")
    config = root / "c.toml"
    config.write_text(f"""
[subject]
model = "{model}"
layer = 2
[sae]
sae = "{sae}"
[corpus]
source = "{tiny_corpus(root / 'corpus.txt')}"
window = 16
[collect]
tokens = 3000
features = "0:4"
[explain]
explainers = ["{explainer}"]
""")
    return config


@pytest.fixture(scope="module")
def explained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, database): tiny features collected and explained by the token explainer."""
    root = tmp_path_factory.mktemp("outage")
    config = tiny_config(root, "tokens")
    db = root / "explained.db"
    for args in (["collect"], ["explain"]):
        result = invoke(config, db, *args)
        assert result.exit_code == 0, result.output
    return config, db


@pytest.fixture
def server() -> Iterator[OutageServer]:
    with outage_server(hang_s=4.0) as srv:
        yield srv


def copy_db(src: Path, dst: Path) -> None:
    """A consistent copy of a WAL-mode SQLite database (its -wal file included)."""
    with sqlite3.connect(src) as source, sqlite3.connect(dst) as target:
        source.backup(target)


def invoke(config: Path, db: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), "--db", str(db), *args], env=ENV)


def score(config: Path, db: Path, server: OutageServer) -> Result:
    return invoke(config, db, "score", "--json", "--llm", "openai", "--model", "m",
                  "--base-url", server.base_url, "--scorer", "detection")


def rows(db: Path) -> list[tuple[str, float | None]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT s.status, s.value FROM scores s JOIN explanations e "
                            "ON e.id = s.explanation_id ORDER BY e.feature_id, e.id").fetchall()


def summary(result: Result) -> dict[str, object]:
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("mode", ["500", "garbage", "no_choices",
                                  pytest.param("429", marks=pytest.mark.slow),
                                  pytest.param("hang", marks=pytest.mark.slow)])
def test_outage_is_retryable_and_the_next_run_scores_everything(
        explained: tuple[Path, Path], server: OutageServer, tmp_path: Path, mode: str) -> None:
    config, source = explained
    db, clean = tmp_path / "outage.db", tmp_path / "clean.db"
    copy_db(source, db)
    copy_db(source, clean)

    server.mode = mode
    failed = score(config, db, server)
    assert failed.exit_code == 3, failed.output  # partial, not 0
    first = summary(failed)  # the JSON summary is printed even though the stage was partial
    assert first["failed"] == first["scored"] and first["scored"]
    assert server.count(mode) > 0
    assert {status for status, _ in rows(db)} == {"error"}  # retryable, not parse_error

    server.mode = "ok"
    healthy = score(config, db, server)
    assert healthy.exit_code == 0, healthy.output
    again = summary(healthy)
    assert again["failed"] == 0 and again["scored"] == first["scored"]  # every one retried
    assert server.count("ok") > 0
    after = rows(db)
    assert after and {status for status, _ in after} == {"ok"}  # no parse_error, no error left

    never_failed = score(config, clean, server)  # the same scores, as if no outage happened
    assert never_failed.exit_code == 0, never_failed.output
    assert rows(clean) == after


def test_a_real_reply_that_cannot_be_parsed_stays_parse_error(
        explained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server is up and answers, but not in the asked format: that is a fact about the
    model, kept as ``parse_error`` (and not retried), and the command exits 0."""
    import tests.llm.outage_server as srv_module

    config, source = explained
    db = tmp_path / "parse.db"
    copy_db(source, db)
    monkeypatch.setattr(srv_module, "detection_answer", lambda prompt: "I think so.")
    with outage_server() as server:
        result = score(config, db, server)
        assert result.exit_code == 0, result.output
        assert {status for status, _ in rows(db)} == {"parse_error"}
        calls = len(server.requests)
        assert score(config, db, server).exit_code == 0
        assert len(server.requests) == calls  # parse errors are results: nothing re-asked
