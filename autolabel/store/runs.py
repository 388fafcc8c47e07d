"""Run rows: one per CLI invocation or batch, with config, provenance, status and summary."""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from autolabel import __version__
from autolabel.db import Run, utcnow


def insert_run(session: Session, command: str, config: dict[str, Any],
               argv: list[str]) -> int:
    """Insert the ``runs`` row (status running) with config and provenance; returns its id."""
    run = Run(command=command, status="running", package_version=__version__, config=config,
              argv=argv, host=socket.gethostname(), pid=os.getpid())
    session.add(run)
    session.flush()
    return run.id


def close_run(session: Session, run_id: int, status: str, summary: dict[str, Any] | None,
              error: str | None) -> None:
    """Record a run's final status, summary and error."""
    run = session.get(Run, run_id)
    if run is not None:
        run.status, run.summary, run.error = status, summary, error
        run.finished_at = utcnow()


def running_rows(session: Session, exclude: int | None = None) -> list[Run]:
    """Rows still marked ``running`` (other than ``exclude``)."""
    query = select(Run).where(Run.status == "running")
    if exclude is not None:
        query = query.where(Run.id != exclude)
    return list(session.scalars(query))


def mark_killed(session: Session, row: Run, why: str) -> None:
    """Close a run whose process is gone: status ``killed`` with the reason."""
    row.status, row.error = "killed", why
    row.finished_at = utcnow()


def touch_run(session: Session, run_id: int) -> None:
    """Record that the run's process is alive (``heartbeat_at = now``)."""
    session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow()))
