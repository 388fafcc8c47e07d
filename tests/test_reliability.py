"""Issue 18 through the real CLI: hostile text stays inert, bad inputs get one handled line and
write nothing, credentials are never stored, a killed run resumes to the same database."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from autolabel.cli import cli
from autolabel.config import load_config
from autolabel.db import open_database
from autolabel.llm import FakeClient
from autolabel.pipeline import explain_stage
from tests.test_run import snapshot, write_config
from tests.tiny import WORDS, tiny_bytelevel_model_dir, tiny_corpus, tiny_model_dir, tiny_sae_dir

HOSTILE = "\x1b]0;TERMPWNED\x07\x1b[31mANSIRED\x1b[0m"
FORMULA = '=HYPERLINK("http://evil.example","click")+cmd|calc'
SAE_NAME = "=cmd|calc"  # an SAE directory name that is also a spreadsheet formula


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def copy_db(src: Path, dst: Path) -> None:
    """A consistent copy of a live WAL-mode SQLite database (its -wal file included)."""
    with sqlite3.connect(src) as source, sqlite3.connect(dst) as target:
        source.backup(target)


def one_error_line(result: Result) -> str:
    """The handled error: exit != 0 and exactly one ``Error:`` line on stderr."""
    assert result.exit_code != 0, result.output
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A collection over a corpus whose documents carry a terminal-retitling escape sequence,
    made with a byte-level tokenizer that preserves it, under an SAE named like a formula."""
    root = tmp_path_factory.mktemp("hostile")
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(30)) + f" {HOSTILE} " +
            " ".join(rng.choice(WORDS) for _ in range(30)) for _ in range(40)]
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(docs) + "\n")
    model = tiny_bytelevel_model_dir(root / "model", docs)
    sae = tiny_sae_dir(root / SAE_NAME)
    db = root / "hostile.db"
    result = invoke("--db", str(db), "collect", "--model", str(model), "--layer", "2", "--sae",
                    str(sae), "--corpus", str(corpus), "--window", "16", "--tokens", "4000",
                    "--features", "0:8")
    assert result.exit_code == 0, result.output
    return {"root": root, "db": db, "model": model, "sae": sae, "corpus": corpus}


@pytest.mark.parametrize("tty", [False, True], ids=["pipe", "forced-colour terminal"])
def test_features_show_makes_escape_sequences_visible(hostile: dict[str, Path],
                                                      tty: bool) -> None:
    env = {"FORCE_COLOR": "1", "COLUMNS": "120"} if tty else {"NO_COLOR": "1"}
    shown = ""
    for index in range(8):
        result = invoke("--db", str(hostile["db"]), "features", "show", f"{SAE_NAME}:{index}",
                        "--limit", "50", env=env)
        assert result.exit_code == 0, result.output
        shown += result.stdout
    assert "TERMPWNED" in shown  # the text is shown …
    assert "\x1b]" not in shown and "\x07" not in shown  # … but no OSC sequence or BEL reaches
    assert "␛]0;TERMPWNED" in shown  # the terminal: ESC is drawn as a visible symbol


def test_csv_export_neutralises_formula_cells(hostile: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "csv.db"
    copy_db(hostile["db"], db)
    config = load_config(overrides={"explain.explainers": ["llm"],
                                    "subject.model": str(hostile["model"])}, environ={})
    explain_stage(config, open_database(str(db)), client=FakeClient(default=FORMULA))
    result = invoke("--db", str(db), "export", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    cells = [cell for row in rows[1:] for cell in row]
    assert cells and not any(c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in cells)
    assert f"'{SAE_NAME}:0" in cells  # the SAE name column was neutralised, not dropped
    assert all(c == f"'{FORMULA}" for c in cells if "HYPERLINK" in c)


def test_non_utf8_config_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes("[corpus]\nsource = \"caf\xe9.txt\"\n".encode("latin-1"))
    db = tmp_path / "never.db"
    line = one_error_line(invoke("--db", str(db), "--config", str(bad), "collect"))
    assert str(bad) in line and "UTF-8" in line
    assert not db.exists()


@pytest.mark.parametrize("damage", ["truncated", "random", "zero-header"])
def test_broken_sae_weights_are_one_line_and_write_no_rows(hostile: dict[str, Path],
                                                           tmp_path: Path, damage: str) -> None:
    sae = tmp_path / "broken-sae"
    shutil.copytree(hostile["sae"], sae)
    weights = sae / "sae_weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 3],
                         "random": os.urandom(len(data)),
                         "zero-header": b"\x00" * 8 + data[8:]}[damage])
    db = tmp_path / "broken.db"
    line = one_error_line(invoke("--db", str(db), "collect", "--model", str(hostile["model"]),
                                 "--layer", "2", "--sae", str(sae), "--corpus",
                                 str(hostile["corpus"]), "--window", "16", "--tokens", "2000",
                                 "--features", "0:8"))
    assert str(sae) in line
    assert not db.exists()  # the database this command created is removed again


def test_a_file_that_is_not_a_database_is_one_line_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"shopping list\nmilk\n")
    line = one_error_line(invoke("--db", str(path), "features", "list"))
    assert "not a database" in line
    assert path.read_bytes() == b"shopping list\nmilk\n"


@pytest.mark.parametrize("spec", ["abc", "10:5", "-1"])
def test_bad_features_are_rejected_before_any_model_loads(tmp_path: Path, spec: str) -> None:
    missing_model = tmp_path / "no-such-model"  # loading it would fail with another message
    line = one_error_line(invoke("--db", str(tmp_path / "f.db"), "collect", "--features", spec,
                                 "--model", str(missing_model)))
    assert "--features" in line and "no-such-model" not in line


def test_reading_commands_refuse_a_missing_database(tmp_path: Path) -> None:
    typo = tmp_path / "no" / "such" / "dir" / "labels.db"
    for args in (["features", "list"], ["search", "x"], ["stats"], ["export"]):
        line = one_error_line(invoke("--db", str(typo), *args))
        assert "no database at" in line
    assert not (tmp_path / "no").exists()


def test_creating_commands_say_where_the_database_went(tmp_path: Path) -> None:
    fresh = tmp_path / "new" / "dir" / "labels.db"
    result = invoke("--db", str(fresh), "db", "upgrade")
    assert result.exit_code == 0 and fresh.exists()
    assert f"Created a new database at {fresh}" in result.stderr


def test_json_errors_are_json_on_stdout(tmp_path: Path) -> None:
    result = invoke("--db", str(tmp_path / "j.db"), "--json", "db", "upgrade")
    assert result.exit_code == 0
    failed = invoke("--db", str(tmp_path / "j.db"), "features", "show", "7", "--json")
    data = json.loads(failed.stdout)
    assert failed.exit_code == data["exit_code"] == 1 and "collect" in data["error"]


def test_credentials_in_base_url_are_never_stored_or_printed(hostile: dict[str, Path],
                                                            tmp_path: Path) -> None:
    db = tmp_path / "secret.db"
    copy_db(hostile["db"], db)
    config = tmp_path / "secret.toml"
    config.write_text(f"""
[subject]
model = "{hostile['model']}"
layer = 2
[sae]
sae = "{hostile['sae']}"
[corpus]
source = "{hostile['corpus']}"
window = 16
[collect]
tokens = 4000
features = "0:8"
[llm]
provider = "openai"
model = "m"
base_url = "http://user:PASSWORD@127.0.0.1:9/v1"
max_retries = 0
timeout = 2
[explain]
explainers = ["llm"]
[run]
stages = ["collect", "explain"]
""")
    result = invoke("--db", str(db), "--config", str(config), "--json", "run",
                    env={"OPENAI_API_KEY": "sk-x"})
    assert result.exit_code != 0
    assert "PASSWORD" not in result.stdout and "PASSWORD" not in result.stderr
    for path in (db, Path(f"{db}-wal")):
        assert not path.exists() or b"PASSWORD" not in path.read_bytes()
    stored = sqlite3.connect(db).execute("SELECT config FROM runs").fetchall()
    assert stored and all("PASSWORD" not in row[0] for row in stored)
    assert any("***@127.0.0.1:9" in row[0] for row in stored)


@pytest.mark.postgres
def test_whole_run_completes_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    """Every stage, the audit included (its flag directions overflowed VARCHAR(32) there)."""
    root = tmp_path / "pg"
    root.mkdir()
    tiny = {"model": tiny_model_dir(root / "model"), "sae": tiny_sae_dir(root / "sae"),
            "corpus": tiny_corpus(root / "corpus.txt"), "root": root}
    config = write_config(tiny, root)
    result = invoke("--db", pg_url, "--config", str(config), "--json", "run")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [s["status"] for s in summary["stages"]] == ["ok"] * 5
    database = open_database(pg_url)
    with database.engine.connect() as conn:
        statuses = {r[0] for r in conn.execute(text("SELECT status FROM runs"))}
        audits = conn.execute(text("SELECT count(*) FROM audits WHERE status='ok'")).scalar()
    assert statuses == {"ok"} and audits == 1


def _run_process(config: Path, db: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "autolabel.cli", "--db", str(db), "--config",
                             str(config), "run"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """Five SIGKILLs at seeded random moments of successive resumes, then a run to the end:
    the database equals an uninterrupted run's, passes integrity_check, and no run row is
    left ``running``."""
    root = tmp_path / "art"
    root.mkdir()
    tiny = {"model": tiny_model_dir(root / "model"), "sae": tiny_sae_dir(root / "sae"),
            "corpus": tiny_corpus(root / "corpus.txt"), "root": root}
    clean_dir, killed_dir = tmp_path / "clean", tmp_path / "killed"
    clean_dir.mkdir()
    killed_dir.mkdir()
    clean_db, killed_db = clean_dir / "clean.db", killed_dir / "killed.db"
    start = time.monotonic()
    assert _run_process(write_config(tiny, clean_dir), clean_db).wait(timeout=900) == 0
    duration = time.monotonic() - start
    config = write_config(tiny, killed_dir)
    rng = random.Random(18)
    for _ in range(5):
        proc = _run_process(config, killed_db)
        time.sleep(rng.uniform(0.2, 0.9) * duration)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert _run_process(config, killed_db).wait(timeout=900) == 0
    with sqlite3.connect(killed_db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM runs WHERE status='running'").fetchone() == (
            0,)
    assert _comparable(snapshot(killed_db)) == _comparable(snapshot(clean_db))


def _comparable(snap: dict[str, Any]) -> dict[str, Any]:
    """Snapshots minus the audit count (an audit killed midway is redone, not duplicated)."""
    return {k: v for k, v in snap.items() if k != "audits_ok"}
