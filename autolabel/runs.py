"""Runs as the operator sees them: one ``runs`` row per invocation, one batch per database at a
time (a lock), exit codes, the deadline, and the crash hook the crash-safety tests pull.

Every way out of a run closes its row: ok, partial (budget or deadline, exit 3) or failed
(exit 1), so a row is ``running`` only while its process lives.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from filelock import FileLock, Timeout
from sqlalchemy import text

from autolabel.config import Config
from autolabel.db import Database, sqlite_path
from autolabel.errors import AutolabelError, BudgetExceeded
from autolabel.store.runs import close_run, insert_run

Progress = Callable[[int, int], None]  # (done, total)
CRASH_ENV = "AUTOLABEL_CRASH_AT"  # fault injection for the crash-safety test: "stage:n"
EXIT_OK, EXIT_FAILED, EXIT_PARTIAL = 0, 1, 3
RUN_LOCK_KEY = 7_315_202_612


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

    @property
    def exit_code(self) -> int:
        """0 ok, 1 failed, 3 partial (budget or deadline hit; the next run resumes)."""
        return {"ok": EXIT_OK, "partial": EXIT_PARTIAL}.get(self.status, EXIT_FAILED)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"run_id": self.run_id, "status": self.status, "report": self.report,
                "seconds": round(self.seconds, 2), "error": self.error,
                "stages": [s.__dict__ for s in self.stages]}


def crash_point(stage: str, count: int) -> None:
    """SIGKILL this process at a named point when the crash-safety test asks for it.

    ``AUTOLABEL_CRASH_AT=explain:3`` kills the process after the third unit of explain work,
    exactly like a power cut: no cleanup, no exception handlers.
    """
    target = os.environ.get(CRASH_ENV)
    if target and target == f"{stage}:{count}":
        os.kill(os.getpid(), signal.SIGKILL)


def guarded(stage: str, progress: Progress, deadline: float | None) -> Progress:
    """A progress callback that also enforces the deadline and the crash hook."""
    calls = [0]

    def update(done: int, total: int) -> None:
        calls[0] += 1
        crash_point(stage, calls[0])
        progress(done, total)
        if deadline is not None and time.monotonic() > deadline:
            raise BudgetExceeded(f"deadline reached during {stage}; re-run to resume")

    return update


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


def start_run(database: Database, command: str, config: Config, argv: list[str]) -> int:
    """Insert the ``runs`` row (status running) with config and provenance."""
    with database.session() as session:
        return insert_run(session, command, config.model_dump(mode="json"), argv)


def finish_run(database: Database, summary: RunSummary) -> None:
    """Record the run's final status, summary and error."""
    with database.session() as session:
        close_run(session, summary.run_id, summary.status, summary.as_json(), summary.error)
