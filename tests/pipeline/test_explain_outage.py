"""Issue 18.2, explain side, through the real CLI and a real HTTP server on 127.0.0.1: when
some LLM calls fail mid-batch, ``autolabel explain`` stores them as retryable ``error`` rows,
prints its JSON summary and exits 3; the next run against a healthy server retries exactly
those."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from autolabel.cli import cli
from tests.llm.outage_server import OutageServer, _Handler, serving
from tests.pipeline.test_score_outage import ENV, copy_db, tiny_config


class FlakyServer(OutageServer):
    """Fails (500) every explain request except those of one prompt — the second distinct
    prompt it is sent — so exactly one of four features gets through, whatever the client's
    retries do; ``flaky = False`` makes it healthy. Capability probes always pass."""

    def __init__(self) -> None:
        super().__init__("ok")
        self.RequestHandlerClass = _FlakyHandler
        self.prompts: list[str] = []
        self.flaky = True

    def fails(self, body: dict[str, Any]) -> bool:
        if body.get("max_tokens") == 1:
            return False  # the client's capability probe: the server is up
        key = json.dumps(body.get("messages") or body.get("prompt"), sort_keys=True)
        with self.lock:
            if key not in self.prompts:
                self.prompts.append(key)
            lucky = len(self.prompts) > 1 and key == self.prompts[1]
        return self.flaky and not lucky


class _FlakyHandler(_Handler):
    server: FlakyServer

    def do_POST(self) -> None:  # noqa: N802 - stdlib's name
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        with self.server.lock:
            self.server.requests.append(("flaky", self.path))
        if self.server.fails(body):
            return self._send(500, {"error": {"message": "flaky upstream"}})
        return self._send(200, self._healthy(body))


@contextmanager
def flaky_server() -> Iterator[FlakyServer]:
    with serving(FlakyServer()) as server:
        yield server


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, database): four tiny features collected, nothing explained yet."""
    root = tmp_path_factory.mktemp("explain-outage")
    config = tiny_config(root, "llm")
    db = root / "collected.db"
    result = invoke(config, db, "collect")
    assert result.exit_code == 0, result.output
    return config, db


def invoke(config: Path, db: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), "--db", str(db), *args], env=ENV)


def explain(config: Path, db: Path, server: OutageServer, *extra: str) -> Result:
    return invoke(config, db, "explain", "--json", "--llm", "openai", "--model", "m",
                  "--base-url", server.base_url, *extra)


def statuses(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [s for (s,) in conn.execute(
            "SELECT status FROM explanations WHERE explainer = 'llm' ORDER BY feature_id")]


@pytest.mark.parametrize("variant", ["chat", "completion"])
def test_failed_calls_exit_3_and_are_retried(collected: tuple[Path, Path], tmp_path: Path,
                                             variant: str) -> None:
    config, source = collected
    db = tmp_path / "explain.db"
    copy_db(source, db)
    with flaky_server() as server:
        first = explain(config, db, server, "--variant", variant, "--concurrency", "1")
        assert first.exit_code == 3, first.output  # partial, not 0
        data = json.loads(first.stdout)  # the JSON summary is printed all the same
        assert data["partial"] is True and data["failed"] == 3
        assert data["statuses"].get("error") == 3
        assert statuses(db).count("error") == 3

        server.flaky = False
        second = explain(config, db, server, "--variant", variant)
        assert second.exit_code == 0, second.output
        again = json.loads(second.stdout)
        assert again["failed"] == 0 and again["created"] == 3 and again["skipped"] == 1
        assert "error" not in statuses(db) and len(statuses(db)) == 4


def test_human_output_says_why_it_is_partial(collected: tuple[Path, Path],
                                             tmp_path: Path) -> None:
    config, source = collected
    db = tmp_path / "human.db"
    copy_db(source, db)
    with flaky_server() as server:
        result = invoke(config, db, "explain", "--llm", "openai", "--model", "m",
                        "--base-url", server.base_url)
    assert result.exit_code == 3, result.output
    assert "3 LLM calls failed" in result.stdout and "retried by the next run" in result.stdout


def test_run_with_an_outage_exits_3_and_still_runs_later_stages(
        collected: tuple[Path, Path], tmp_path: Path) -> None:
    """`autolabel run` is partial (exit 3) when explain left retryable outages, yet scores what
    it could; a re-run against a healthy server finishes with exit 0."""
    config, source = collected
    db = tmp_path / "run.db"
    copy_db(source, db)
    with flaky_server() as server:
        env = {**ENV, "AUTOLABEL_LLM__PROVIDER": "openai", "AUTOLABEL_LLM__MODEL": "m",
               "AUTOLABEL_LLM__BASE_URL": server.base_url,
               "AUTOLABEL_RUN__STAGES": '["collect", "explain", "score"]',
               "AUTOLABEL_SCORING__SIMULATOR": "embedding",
               "AUTOLABEL_SEARCH__EMBEDDING_MODEL": "hash"}
        args = ["--config", str(config), "--db", str(db), "--json", "run"]
        first = CliRunner().invoke(cli, args, env=env)
        assert first.exit_code == 3, first.output
        data = json.loads(first.stdout)
        assert data["status"] == "partial"
        stages = {s["stage"]: s["status"] for s in data["stages"]}
        assert stages == {"collect": "ok", "explain": "partial", "score": "ok"}
        assert statuses(db).count("error") == 3
        server.flaky = False
        second = CliRunner().invoke(cli, args, env=env)
        assert second.exit_code == 0, second.output
        assert "error" not in statuses(db)
