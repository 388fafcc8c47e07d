"""Run rows: every exit path closes its row, dead runs are marked killed, secrets are redacted."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from autolabel import db as dbm
from autolabel.config import load_config
from autolabel.runs import (
    STALE_AFTER_S,
    Heartbeat,
    closing_run,
    redact_config,
    start_run,
    sweep_stale_runs,
)


@pytest.fixture
def database(tmp_path: Path) -> dbm.Database:
    return dbm.open_database(str(tmp_path / "runs.db"))


def _row(database: dbm.Database, run_id: int) -> dbm.Run:
    with database.session() as session:
        row = session.get(dbm.Run, run_id)
        assert row is not None
        return row


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_unexpected_exception_closes_the_row_as_failed(database: dbm.Database) -> None:
    run_id = start_run(database, "run", load_config(environ={}), [])
    with pytest.raises(ZeroDivisionError), closing_run(database, run_id):
        1 / 0  # noqa: B018 - the failure under test
    row = _row(database, run_id)
    assert row.status == "failed" and "ZeroDivisionError" in (row.error or "")
    assert row.finished_at is not None


def test_interrupt_closes_the_row(database: dbm.Database) -> None:
    run_id = start_run(database, "run", load_config(environ={}), [])
    with pytest.raises(KeyboardInterrupt), closing_run(database, run_id):
        raise KeyboardInterrupt
    assert _row(database, run_id).status == "failed"
    assert "interrupted" in (_row(database, run_id).error or "")


def test_dead_pid_and_lock_held_rows_are_marked_killed(database: dbm.Database) -> None:
    config = load_config(environ={})
    ghost = start_run(database, "collect", config, [])
    with database.session() as session:
        session.get(dbm.Run, ghost).pid = _dead_pid()  # type: ignore[union-attr]
    earlier = start_run(database, "run", config, [])  # our pid: alive, but not holding a lock
    current = start_run(database, "run", config, [], lock_held=True)
    assert _row(database, ghost).status == "killed" and "gone" in (_row(database, ghost).error
                                                                    or "")
    assert _row(database, earlier).status == "killed"
    assert _row(database, current).status == "running"


def test_stale_heartbeat_on_another_host_is_killed(database: dbm.Database) -> None:
    run_id = start_run(database, "run --worker", load_config(environ={}), [])
    with database.session() as session:
        row = session.get(dbm.Run, run_id)
        assert row is not None
        row.host = "elsewhere"
        row.heartbeat_at = dbm.utcnow() - timedelta(seconds=STALE_AFTER_S + 60)
    assert sweep_stale_runs(database, -1, lock_held=False) == 1
    assert _row(database, run_id).status == "killed"
    assert "heartbeat" in (_row(database, run_id).error or "")


def test_heartbeat_is_rate_limited(database: dbm.Database) -> None:
    run_id = start_run(database, "run", load_config(environ={}), [])
    now = [100.0]
    beat = Heartbeat(database, run_id, every_s=30, clock=lambda: now[0])
    beat()
    first = _row(database, run_id).heartbeat_at
    now[0] += 10
    beat()
    assert _row(database, run_id).heartbeat_at == first
    now[0] += 30
    beat()
    assert _row(database, run_id).heartbeat_at != first


def test_credentials_never_stored_in_run_config(database: dbm.Database) -> None:
    config = load_config(overrides={"llm.base_url": "http://user:PASSWORD@host/v1",
                                    "db": "postgresql://me:SECRET@db/autolabel"}, environ={})
    stored = redact_config(config)
    assert "PASSWORD" not in str(stored) and "SECRET" not in str(stored)
    run_id = start_run(database, "run", config, [])
    with database.session() as session:
        raw = session.scalar(select(dbm.Run.config).where(dbm.Run.id == run_id))
    assert "PASSWORD" not in str(raw) and stored["llm"]["base_url"] == "http://***@host/v1"
