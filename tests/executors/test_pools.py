"""Explain and score as Ray actor pools (issue 17.3, 17.4, 17.6), on a real local Ray cluster,
a real OpenAI-compatible HTTP server on 127.0.0.1 and the tiny model and SAE:

- ``autolabel run --executor ray`` stores the same database as ``autolabel run``: examples
  identical, explanations identical (the server is deterministic), scores within 1e-6;
- a Ray worker process SIGKILLed mid-explain: Ray re-runs its batch on the restarted actor and
  every feature still has exactly one candidate set;
- the LLM token budget holds across the cluster (the run stops partial, work saved);
- a ``--executor ray`` run whose driver is SIGKILLed mid-explain resumes to the same database.
Fast tests cover the pieces without Ray: the actors' call log and the budget gate.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner, Result

from autolabel.cli import cli
from autolabel.db import open_database
from autolabel.errors import BudgetExceeded
from autolabel.executors.on_ray import worker_env
from autolabel.executors.pools import CallLog, PoolReply, absorb, budgeted, relinked
from autolabel.explain import Candidate
from autolabel.llm.fake import FakeClient
from autolabel.llm.recording import RecordingClient
from tests.collect.snapshots import collected
from tests.llm.outage_server import OutageServer, _Handler, outage_server, serving
from tests.tiny import tiny_corpus, tiny_model_dir, tiny_sae_dir

ENV = {"AUTOLABEL_LLM__MAX_RETRIES": "1", "AUTOLABEL_LLM__TIMEOUT": "20",
       "OPENAI_API_KEY": "sk-test"}


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pools")
    return {"model": tiny_model_dir(root / "model"), "sae": tiny_sae_dir(root / "sae"),
            "corpus": tiny_corpus(root / "corpus.txt", n_docs=120)}


def write_config(path: Path, parts: dict[str, Path], base_url: str, features: int = 6,
                 **run: Any) -> Path:
    """collect → explain (tokens + llm) → score (detection) over ``features`` tiny ones."""
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in run.items())
    path.write_text(f"""
[subject]
model = "{parts['model']}"
layer = 2
device = "cpu"
[sae]
sae = "{parts['sae']}"
[corpus]
source = "{parts['corpus']}"
window = 16
[collect]
tokens = 4000
features = "0:{features}"
batch_size = 2
[explain]
explainers = ["tokens", "llm"]
[scoring]
scorers = ["detection"]
[llm]
provider = "openai"
model = "m"
base_url = "{base_url}"
concurrency = 1
[run]
stages = ["collect", "explain", "score"]
{extra}""")
    return path


def invoke(config: Path, db: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), "--db", str(db), "--json", *args],
                              env=ENV)


def stored(db: Path) -> dict[str, Any]:
    """Explanations and scores by natural identity (feature index, explainer, candidate), the
    prompt each LLM candidate's call row holds, and the llm_calls by status."""
    with sqlite3.connect(db) as conn:
        expl = sorted(conn.execute(
            "SELECT f.\"index\", e.explainer, e.candidate, e.text, e.status, e.reason, "
            "e.prompt_hash, e.raw_reply, c.prompt FROM explanations e JOIN features f ON "
            "f.id = e.feature_id LEFT JOIN llm_calls c ON c.id = e.llm_call_id"))
        scores = sorted(conn.execute(
            "SELECT f.\"index\", e.explainer, e.candidate, s.scorer, s.status, s.verdict, "
            "s.value, s.floor_value, s.validation_value, s.n_examples, "
            "(SELECT f2.\"index\" FROM explanations e2 JOIN features f2 ON f2.id = "
            "e2.feature_id WHERE e2.id = s.floor_explanation_id) FROM scores s JOIN "
            "explanations e ON e.id = s.explanation_id JOIN features f ON f.id = e.feature_id"))
        calls = sorted(conn.execute("SELECT status, count(*) FROM llm_calls GROUP BY status"))
    return {"explanations": expl, "scores": scores, "calls": calls}


def same_scores(got: list[tuple], want: list[tuple]) -> bool:
    """Equal rows, floats within 1e-6 (the acceptance's tolerance)."""
    def close(a: Any, b: Any) -> bool:
        if isinstance(a, float) and isinstance(b, float):
            return math.isclose(a, b, abs_tol=1e-6)
        return bool(a == b)

    return len(got) == len(want) and all(
        len(g) == len(w) and all(close(a, b) for a, b in zip(g, w, strict=True))
        for g, w in zip(got, want, strict=True))


@pytest.mark.slow
def test_run_executor_ray_gives_the_same_database(ray_cluster: Any, parts: dict[str, Path],
                                                  tmp_path: Path) -> None:
    senders = {}
    with killing_server() as server:
        config = write_config(tmp_path / "c.toml", parts, server.base_url)
        dbs = {name: tmp_path / f"{name}.db" for name in ("local", "ray")}
        for name, extra in (("local", []), ("ray", ["--executor", "ray"])):
            server.pids.clear()
            result = invoke(config, dbs[name], "run", *extra)
            assert result.exit_code == 0, result.output
            assert json.loads(result.stdout)["status"] == "ok"
            senders[name] = set(server.pids)
    assert senders["local"] == {os.getpid()}
    assert os.getpid() not in senders["ray"] and len(senders["ray"]) >= 2  # the pools' actors
    assert collected(dbs["ray"]) == collected(dbs["local"])
    want, got = stored(dbs["local"]), stored(dbs["ray"])
    assert got["explanations"] == want["explanations"]
    assert len([e for e in got["explanations"] if e[1] == "llm"]) == 6
    assert all(e[8] for e in got["explanations"] if e[1] == "llm")  # each cites its call
    assert got["scores"] and same_scores(got["scores"], want["scores"])
    assert got["calls"] == want["calls"]


class KillingServer(OutageServer):
    """Healthy, and notes which process sent each request (``pids``; capability probes are
    not counted); the ``kill_at``-th request (None: none) SIGKILLs its sender (a Ray pool
    actor) and gets no reply;
    ``killed`` is that process's pid."""

    def __init__(self, kill_at: int | None = None) -> None:
        super().__init__("ok")
        self.RequestHandlerClass = _KillingHandler
        self.kill_at, self.killed = kill_at, 0
        self.delay_s = 0.0  # seconds each counted reply waits (set by a test between runs)
        self.pids: list[int | None] = []


class _KillingHandler(_Handler):
    server: KillingServer

    def do_POST(self) -> None:  # noqa: N802 - stdlib's name
        pid = client_pid(self.client_address[1])
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.rfile = io.BytesIO(raw)  # for the healthy handler, which reads it again
        if json.loads(raw or b"{}").get("max_tokens") == 1:
            return super().do_POST()  # a client's capability probe: not counted
        with self.server.lock:
            self.server.pids.append(pid)
            now = len(self.server.pids) == self.server.kill_at
        if now:
            assert pid not in (None, os.getpid())
            self.server.killed = pid
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(self.server.delay_s)
        super().do_POST()


def client_pid(port: int) -> int | None:
    """The process owning the TCP connection from 127.0.0.1:``port``."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    return None


@contextmanager
def killing_server(kill_at: int | None = None) -> Iterator[KillingServer]:
    with serving(KillingServer(kill_at)) as server:
        yield server


@pytest.mark.slow
def test_a_worker_killed_mid_explain_still_gives_one_candidate_set(
        ray_cluster: Any, parts: dict[str, Path], tmp_path: Path) -> None:
    with killing_server(kill_at=2) as server:
        config = write_config(tmp_path / "c.toml", parts, server.base_url)
        db = tmp_path / "k.db"
        result = invoke(config, db, "run", "--executor", "ray")
    assert result.exit_code == 0, result.output
    assert server.killed  # a real Ray worker process died mid-call
    with sqlite3.connect(db) as conn:
        rows = list(conn.execute(
            "SELECT feature_id, candidate, status, count(*) FROM explanations "
            "WHERE explainer = 'llm' GROUP BY feature_id, candidate"))
    assert len(rows) == 6 and all(n == 1 and status != "error" for _, _, status, n in rows)


@pytest.mark.slow
def test_the_token_budget_holds_across_the_cluster(ray_cluster: Any, parts: dict[str, Path],
                                                   tmp_path: Path) -> None:
    """One call (15 tokens) spends the budget: the pool stops handing out batches, the run
    stops partial in explain, and what the actors already did is recorded."""
    with outage_server() as server:
        config = write_config(tmp_path / "c.toml", parts, server.base_url, features=16)
        db = tmp_path / "b.db"
        result = invoke(config, db, "run", "--executor", "ray", "--max-llm-tokens", "10")
    assert result.exit_code == 3, result.output
    stages = {s["stage"]: s["status"] for s in json.loads(result.stdout)["stages"]}
    assert stages == {"collect": "ok", "explain": "partial"}
    with sqlite3.connect(db) as conn:
        calls = conn.execute("SELECT count(*), sum(tokens_in + tokens_out) FROM llm_calls"
                             ).fetchone()
        llm = conn.execute("SELECT count(*) FROM explanations WHERE explainer = 'llm'"
                           ).fetchone()[0]
    # handed out before the first reply came back: at most 2 batches (of 2 features) per
    # actor, 2 actors: 8 of the 16 features' calls at most
    assert 1 <= calls[0] <= 8 < 16 and llm == calls[0]


def run_process(config: Path, db: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``autolabel run`` in its own process group (its local Ray cluster dies with it)."""
    return subprocess.Popen([sys.executable, "-m", "autolabel.cli", "--db", str(db), "--config",
                             str(config), "run", *extra], env={**os.environ, **ENV},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def llm_candidates(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM explanations WHERE explainer = 'llm'"
                                    ).fetchone()[0])
    except sqlite3.OperationalError:  # no table yet, or busy
        return 0


@pytest.mark.slow
def test_a_ray_run_resumed_after_sigkill_equals_an_uninterrupted_one(
        parts: dict[str, Path], tmp_path: Path) -> None:
    """The driver of ``run --executor ray`` SIGKILLed mid-explain (after its first stored LLM
    candidates), then resumed with ``--executor ray``: the database equals a local run's,
    integrity ok, no run left ``running``. During the run that is killed each reply takes
    0.3 s, so batches of candidates arrive ~0.6 s apart and the kill (polled every 0.2 s) lands
    mid-explain; with instant replies all six were once stored between two polls."""
    with killing_server() as server:
        config = write_config(tmp_path / "c.toml", parts, server.base_url)
        clean, killed = tmp_path / "clean.db", tmp_path / "killed.db"
        assert run_process(config, clean).wait(timeout=900) == 0
        server.delay_s = 0.3
        proc = run_process(config, killed, "--executor", "ray")
        deadline = time.monotonic() + 900
        while proc.poll() is None and llm_candidates(killed) == 0:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        assert 0 < llm_candidates(killed) < 6  # killed mid-explain
        server.delay_s = 0.0
        resumed = run_process(config, killed, "--executor", "ray")
        assert resumed.wait(timeout=900) == 0, resumed.stderr.read() if resumed.stderr else ""
    with sqlite3.connect(killed) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM runs WHERE status = 'running'"
                            ).fetchone() == (0,)
    assert collected(killed) == collected(clean)
    want, got = stored(clean), stored(killed)
    assert got["explanations"] == want["explanations"]
    assert same_scores(got["scores"], want["scores"])


# ----------------------------------------------------------------------- without Ray


def test_call_log_keeps_rows_for_the_driver_to_write(tmp_path: Path) -> None:
    log = CallLog(FakeClient(default="a phrase"))
    first, second = log.complete("p1"), log.complete("p2")
    assert (first.call_id, second.call_id) == (-1, -2)  # stand-ins until the driver writes
    calls, spent = log.take()
    assert [c.prompt for c in calls] == ["p1", "p2"] and spent["calls"] == 2
    assert log.take() == ([], dict.fromkeys(spent, 0))
    database = open_database(str(tmp_path / "d.db"))
    driver = RecordingClient(FakeClient(), database, max_tokens_total=10**6)
    ids = absorb(driver, PoolReply([], calls, spent))
    assert len(ids) == 2 and all(isinstance(i, int) for i in ids)
    assert driver.totals["calls"] == 2
    cand = Candidate("llm", "x", "ok", None, "x", "m", "h", 0, -2)
    assert relinked([[cand]], ids)[0][0].call_id == ids[1]


def test_budget_gate_stops_handing_out_batches(tmp_path: Path) -> None:
    driver = RecordingClient(FakeClient(), None, max_tokens_total=10)
    gate = budgeted(iter([1, 2, 3]), driver)
    assert next(gate) == 1
    driver.absorb([], {"tokens_in": 8, "tokens_out": 4})
    with pytest.raises(BudgetExceeded):
        next(gate)
    assert list(budgeted([1, 2], object())) == [1, 2]  # a client without a budget


def test_worker_env_carries_only_the_settings_actors_need() -> None:
    env = {"OPENAI_API_KEY": "k", "AUTOLABEL_CACHE_DIR": "/c", "HF_HUB_OFFLINE": "1",
           "HOME": "/root", "AWS_SECRET_ACCESS_KEY": "no"}
    assert worker_env(env) == {"OPENAI_API_KEY": "k", "AUTOLABEL_CACHE_DIR": "/c",
                               "HF_HUB_OFFLINE": "1"}
