"""Run rows: one per CLI invocation or batch, with config, provenance, status and summary."""

from __future__ import annotations

import os
import socket
from typing import Any

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
