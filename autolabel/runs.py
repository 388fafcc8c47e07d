"""Runs as the operator sees them: one ``runs`` row per invocation, one batch per database at a
time (a lock), exit codes, the deadline, and the crash hook the crash-safety tests pull.

Every way out of a run closes its row: ok, partial (budget or deadline, exit 3) or failed
(exit 1), so a row is ``running`` only while its process lives.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from filelock import FileLock, Timeout
from sqlalchemy import text

from autolabel.config import Config
from autolabel.db import Database, redact, sqlite_path, utcnow
from autolabel.errors import AutolabelError, BudgetExceeded
from autolabel.safety import redact_url
from autolabel.store.runs import close_run, insert_run, mark_killed, running_rows, touch_run

Progress = Callable[[int, int], None]  # (done, total)
CRASH_ENV = "AUTOLABEL_CRASH_AT"  # fault injection for the crash-safety test: "stage:n"
EXIT_OK, EXIT_FAILED, EXIT_PARTIAL = 0, 1, 3
RUN_LOCK_KEY = 7_315_202_612
HEARTBEAT_EVERY_S = 30.0
STALE_AFTER_S = 3600.0  # a run that has not beaten for this long is dead (other hosts)


@dataclass
class StageResult:
    """One stage's outcome inside a run."""

    stage: str
    status: str  # ok | partial | failed | skipped
    seconds: float
    summary: dict[str, Any]


@dataclass
class RunSummary:
    """What ``autolabel run`` did; also stored as JSON in ``runs.summary``."""

    run_id: int
    status: str  # ok | partial | failed
    stages: list[StageResult]
    report: str | None
    seconds: float
    error: str | None = None
    loaded: list[str] = field(default_factory=list)  # what the run context had to load

    @property
    def exit_code(self) -> int:
        """0 ok, 1 failed, 3 partial (budget or deadline hit; the next run resumes)."""
        return {"ok": EXIT_OK, "partial": EXIT_PARTIAL}.get(self.status, EXIT_FAILED)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"run_id": self.run_id, "status": self.status, "report": self.report,
                "seconds": round(self.seconds, 2), "error": self.error, "loaded": self.loaded,
                "stages": [s.__dict__ for s in self.stages]}


def stage_headline(stage: str, s: dict[str, Any]) -> str:
    """A short human line per stage (the run table and the stage-finished log line)."""
    if not s:
        return ""
    if stage == "collect":
        return (f"{s['features'] - s['already_done']} collected, {s['already_done']} already "
                f"done ({s['tokens']:,} tokens)")
    if stage == "explain":
        return (f"{s['created']} new feature × explainer candidate sets, {s['skipped']} "
                "already done")
    if stage == "score":
        mean, floor = s.get("mean_score"), s.get("mean_floor")
        shown = "—" if mean is None else f"{mean:.3f} ({'—' if floor is None else f'{floor:.3f}'})"
        return (f"{s['scored']} scored with {s['simulator'] or '-'}, mean {shown}; "
                f"{s['skipped']} already done")
    if stage == "embed":
        return f"{s['embedded']} embedded ({s['model']})"
    if stage == "audit":
        return (f"{s['flagged_features']} of {s['n_features']} features flagged"
                f"{' (reused)' if s.get('skipped') else ''}")
    return ""


def crash_point(stage: str, count: int) -> None:
    """SIGKILL this process at a named point when the crash-safety test asks for it.

    ``AUTOLABEL_CRASH_AT=explain:3`` kills the process after the third unit of explain work,
    exactly like a power cut: no cleanup, no exception handlers.
    """
    target = os.environ.get(CRASH_ENV)
    if target and target == f"{stage}:{count}":
        os.kill(os.getpid(), signal.SIGKILL)


def guarded(stage: str, progress: Progress, deadline: float | None,
            beat: Callable[[], None] | None = None) -> Progress:
    """A progress callback that also enforces the deadline and the crash hook, and keeps the
    run's heartbeat fresh."""
    calls = [0]

    def update(done: int, total: int) -> None:
        calls[0] += 1
        crash_point(stage, calls[0])
        progress(done, total)
        if beat is not None:
            beat()
        if deadline is not None and time.monotonic() > deadline:
            raise BudgetExceeded(f"deadline reached during {stage}; re-run to resume")

    return update


class Heartbeat:
    """Refreshes ``runs.heartbeat_at`` at most every ``every_s`` seconds, so another process
    can tell a live run from one whose process vanished."""

    def __init__(self, database: Database, run_id: int, every_s: float = HEARTBEAT_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.database, self.run_id, self.every_s, self.clock = database, run_id, every_s, clock
        self.last = -math.inf

    def __call__(self) -> None:
        now = self.clock()
        if now - self.last < self.every_s:
            return
        self.last = now
        with self.database.session() as session:
            touch_run(session, self.run_id)


@contextlib.contextmanager
def run_lock(database: Database, wait: bool) -> Iterator[None]:
    """One batch per database: a second run exits with a clear message (or waits)."""
    if database.dialect == "postgresql":
        with _pg_run_lock(database, wait):
            yield
        return
    path = sqlite_path(database.url)
    if path is None:
        yield
        return
    try:
        with FileLock(str(path) + ".run.lock", timeout=-1 if wait else 0):
            yield
    except Timeout:
        raise AutolabelError(f"another `autolabel run` is using {path}; wait for it, or pass "
                             "--wait to queue behind it") from None


@contextlib.contextmanager
def _pg_run_lock(database: Database, wait: bool) -> Iterator[None]:
    """Session-level advisory lock held on a dedicated connection for the whole run."""
    with database.engine.connect() as conn:
        if wait:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": RUN_LOCK_KEY})
        elif not conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                              {"k": RUN_LOCK_KEY}).scalar():
            raise AutolabelError("another `autolabel run` is using this database; wait for it, "
                                 "or pass --wait to queue behind it")
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RUN_LOCK_KEY})
            conn.commit()


def start_run(database: Database, command: str, config: Config, argv: list[str],
              *, lock_held: bool = False) -> int:
    """Insert the ``runs`` row (status running) with config and provenance, after closing the
    rows of runs whose process is gone (see :func:`sweep_stale_runs`)."""
    with database.session() as session:
        run_id = insert_run(session, command, redact_config(config), argv)
    sweep_stale_runs(database, run_id, lock_held=lock_held)
    return run_id


def sweep_stale_runs(database: Database, current: int, *, lock_held: bool) -> int:
    """Mark ``killed`` every ``running`` row whose process cannot be alive; returns how many.

    A row is dead when we hold the run lock and it is another ``run`` (the lock admits one),
    when it names this host and its pid is gone, or when its heartbeat (or start, if it never
    beat) is older than ``STALE_AFTER_S``.
    """
    host, now, count = socket.gethostname(), utcnow(), 0
    with database.session() as session:
        for row in running_rows(session, exclude=current):
            why = _dead_because(row, host, now, lock_held)
            if why:
                mark_killed(session, row, why)
                count += 1
    return count


def _dead_because(row: Any, host: str, now: datetime, lock_held: bool) -> str | None:
    """Why a ``running`` row's process cannot be alive, or None when it may be."""
    if lock_held and row.command == "run":
        return "its process ended without closing the run (killed or crashed)"
    if row.host == host and row.pid and not _pid_alive(int(row.pid)):
        return f"process {row.pid} on {host} is gone (killed or crashed)"
    last = row.heartbeat_at or row.started_at
    if last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=timezone.utc)
    if last is not None and (now - last).total_seconds() > STALE_AFTER_S:
        return f"no heartbeat for over {STALE_AFTER_S / 3600:.0f} h"
    return None


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def redact_config(config: Config) -> dict[str, Any]:
    """The config as stored with a run: credentials in URLs replaced by ``***``."""
    data = config.model_dump(mode="json")
    if data.get("db"):
        data["db"] = redact(str(data["db"]))
    if data.get("llm", {}).get("base_url"):
        data["llm"]["base_url"] = redact_url(str(data["llm"]["base_url"]))
    return data


@contextlib.contextmanager
def closing_run(database: Database, run_id: int) -> Iterator[None]:
    """Close the run's row as ``failed`` on any way out that did not close it: an unexpected
    exception, Ctrl-C, or SIGTERM (turned into KeyboardInterrupt while the run is active)."""
    previous = _install_sigterm()
    try:
        yield
    except BaseException as exc:
        error = "interrupted (SIGINT/SIGTERM)" if isinstance(exc, KeyboardInterrupt) else (
            f"unexpected {type(exc).__name__}: {exc}")
        with database.session() as session:
            close_run(session, run_id, "failed", None, error[:4000])
        raise
    finally:
        _restore_sigterm(previous)


def _install_sigterm() -> Any:
    """SIGTERM (systemd stop, kill) raises KeyboardInterrupt so cleanup runs; main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def finish_run(database: Database, summary: RunSummary) -> None:
    """Record the run's final status, summary and error."""
    with database.session() as session:
        close_run(session, summary.run_id, summary.status, summary.as_json(), summary.error)
