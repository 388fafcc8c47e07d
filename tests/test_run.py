"""The nightly batch: end to end on tiny artefacts, idempotence, locking, budgets, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from filelock import FileLock
from sqlalchemy import select

from autolabel import db as dbm
from autolabel.cli import cli
from tests.tiny import tiny_corpus, tiny_model_dir, tiny_sae_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tinyrun")
    return {"model": tiny_model_dir(root / "model"), "sae": tiny_sae_dir(root / "sae"),
            "corpus": tiny_corpus(root / "corpus.txt"), "root": root}


def write_config(tiny: dict[str, Path], folder: Path) -> Path:
    """A nightly.toml for the tiny artefacts (every stage, offline, seconds per run)."""
    text = f"""
[subject]
model = "{tiny['model']}"
layer = 2
[sae]
sae = "{tiny['sae']}"
[corpus]
source = "{tiny['corpus']}"
window = 16
[collect]
tokens = 3000
features = "0:6"
batch_size = 4
[llm]
provider = "local"
model = "{tiny['model']}"
[explain]
explainers = ["tokens", "llm"]
[scoring]
simulator = "embedding"
[search]
embedding_model = "hash"
[audit]
n_boot = 50
n_random = 10
out_dir = "{folder / 'report'}"
"""
    path = folder / "nightly.toml"
    path.write_text(text)
    return path


def snapshot(db_path: Path) -> dict[str, Any]:
    """Database content by natural identity (no ids, times, run ids or paths)."""
    database = dbm.open_database(str(db_path))
    with database.session() as s:
        feats = {f.id: f.index for f in s.scalars(select(dbm.Feature))}
        expls = {e.id: (feats[e.feature_id], e.explainer, e.llm_model, e.prompt_hash,
                        e.candidate) for e in s.scalars(select(dbm.Explanation))}
        return {
            "features": sorted((f.index, f.n_tokens, round(f.density, 9),
                                round(f.max_activation, 5)) for f in s.scalars(
                                    select(dbm.Feature))),
            "examples": sorted((feats[e.feature_id], e.split, e.kind, e.rank, e.document_id,
                                e.start, e.token_ids, e.activations) for e in s.scalars(
                                    select(dbm.Example))),
            "explanations": sorted((*expls[e.id], e.text, e.status, e.is_best)
                                   for e in s.scalars(select(dbm.Explanation))),
            "scores": sorted((expls[x.explanation_id], x.scorer, x.simulator, x.value,
                              x.floor_value, x.status) for x in s.scalars(select(dbm.Score))),
            "embeddings": sorted((expls[x.explanation_id], x.model, x.vector)
                                 for x in s.scalars(select(dbm.Embedding))),
            "flags": sorted((feats[x.feature_id], x.category, x.tier, x.severity)
                            for x in s.scalars(select(dbm.Flag))),
            "audits_ok": len([a for a in s.scalars(select(dbm.Audit)) if a.status == "ok"]),
        }


def run_cli(config: Path, db: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--db", str(db), "--config", str(config), "--json", "run",
                                    *args])


@pytest.mark.slow
def test_run_end_to_end_then_nothing_to_do(tiny: dict[str, Path], tmp_path: Path) -> None:
    config, db = write_config(tiny, tmp_path), tmp_path / "run.db"
    first = run_cli(config, db)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["status"] == "ok"
    assert [s["stage"] for s in summary["stages"]] == ["collect", "explain", "score", "embed",
                                                       "audit"]
    assert Path(summary["report"]).is_file()
    snap = snapshot(db)
    assert snap["explanations"] and snap["scores"] and snap["embeddings"]
    assert all(s[4] is not None or s[5] != "ok" for s in snap["scores"])  # floors stored
    second = json.loads(run_cli(config, db).stdout)
    by_stage = {s["stage"]: s["summary"] for s in second["stages"]}
    assert by_stage["collect"]["tokens"] == 0
    assert by_stage["explain"]["created"] == 0
    assert by_stage["score"]["scored"] == 0
    assert by_stage["embed"]["embedded"] == 0
    assert by_stage["audit"]["skipped"] is True
    assert second["loaded"] == []  # nothing to do: no model, SAE, tokenizer, LLM or embedder
    assert snapshot(db) == snap
    assert heavy_imports_of_a_run(config, db) == []  # issue 12: a no-op run in its own process


def heavy_imports_of_a_run(config: Path, db: Path) -> list[str]:
    """The heavy libraries a fresh ``autolabel run`` process imported (importing torch alone
    costs ~3 s, most of what a run with nothing to do used to take)."""
    probe = ("import json, runpy, sys\n"
             f"sys.argv = ['autolabel', '--db', {str(db)!r}, '--config', {str(config)!r}, 'run']\n"
             "try:\n    runpy.run_module('autolabel.cli', run_name='__main__')\n"
             "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
             "print(json.dumps(sorted(m for m in ('torch', 'scipy', 'transformers', "
             "'sae_lens') if m in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    return list(json.loads(out.strip().splitlines()[-1]))


def test_second_concurrent_run_exits_clearly(tiny: dict[str, Path], tmp_path: Path) -> None:
    config, db = write_config(tiny, tmp_path), tmp_path / "lock.db"
    dbm.open_database(str(db))
    with FileLock(str(db) + ".run.lock"):
        result = run_cli(config, db)
    assert result.exit_code == 1
    assert "another `autolabel run`" in result.stderr and "--wait" in result.stderr


@pytest.mark.slow
def test_budget_exhaustion_is_partial_then_resumes(tiny: dict[str, Path], tmp_path: Path
                                                   ) -> None:
    config, db = write_config(tiny, tmp_path), tmp_path / "budget.db"
    partial = run_cli(config, db, "--max-llm-tokens", "1")
    assert partial.exit_code == 3, partial.output
    data = json.loads(partial.stdout)
    assert data["status"] == "partial" and data["stages"][-1]["stage"] == "explain"
    database = dbm.open_database(str(db))
    with database.session() as s:
        run = s.get(dbm.Run, data["run_id"])
        assert run is not None and run.status == "partial"
    resumed = run_cli(config, db)
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["status"] == "ok"


def test_deadline_is_partial(tiny: dict[str, Path], tmp_path: Path) -> None:
    config, db = write_config(tiny, tmp_path), tmp_path / "deadline.db"
    result = run_cli(config, db, "--deadline", "0.001s")
    assert result.exit_code == 3, result.output
    assert "deadline" in json.loads(result.stdout)["error"]


CRASH_POINTS = ["collect:2", "explain:1", "score:3", "embed:1", "report:1"]


@pytest.mark.slow
def test_sigkill_at_any_point_then_resume_equals_uninterrupted(tiny: dict[str, Path],
                                                               tmp_path: Path) -> None:
    config = write_config(tiny, tmp_path)
    base_db = tmp_path / "base.db"
    cmd = [sys.executable, "-m", "autolabel.cli", "--config", str(config), "run"]
    env = {**os.environ, "AUTOLABEL_DB": str(base_db)}
    env.pop("AUTOLABEL_CRASH_AT", None)
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    expected = snapshot(base_db)
    for point in CRASH_POINTS:
        db = tmp_path / f"crash-{point.replace(':', '-')}.db"
        crash_env = {**env, "AUTOLABEL_DB": str(db), "AUTOLABEL_CRASH_AT": point}
        killed = subprocess.run(cmd, env=crash_env, capture_output=True, text=True)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
        resumed = subprocess.run(cmd, env={**env, "AUTOLABEL_DB": str(db)}, capture_output=True,
                                 text=True)
        assert resumed.returncode == 0, (point, resumed.stderr[-2000:])
        assert snapshot(db) == expected, point


def test_unreachable_ray_address_fails_with_one_line(tiny: dict[str, Path], tmp_path: Path
                                                     ) -> None:
    """`run --ray-address` to a port nobody listens on: one Error line, at once, and no run row
    left `running` (issue 17.4)."""
    pytest.importorskip("ray")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    config, db = write_config(tiny, tmp_path), tmp_path / "ray.db"
    result = run_cli(config, db, "--ray-address", address)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if line.startswith(("Error:",
                                                                                 "Created"))]
    assert f"Error: cannot reach the Ray cluster at {address}" in result.stderr
    assert "ray start --head" in result.stderr
    if db.exists():
        with dbm.open_database(str(db)).session() as s:
            assert "running" not in {r.status for r in s.scalars(select(dbm.Run))}
