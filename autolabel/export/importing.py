"""``autolabel import``: stream a JSONL export, validate each line, hand it to the store.

One transaction per line (all of a feature or none), natural keys throughout, so importing the
same file twice changes nothing. The first bad line stops the import with a one-line error
naming ``file:line``; the lines before it stay imported and re-importing them is a no-op.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autolabel.db import Database
from autolabel.errors import InputError
from autolabel.export.validate import check_record
from autolabel.store.imports import (
    ImportSummary,
    PendingFloor,
    RecordConflict,
    import_record,
    resolve_floors,
)
from autolabel.store.records import Progress, no_progress


def import_jsonl(database: Database, path: Path, progress: Progress | None = None
                 ) -> ImportSummary:
    """Import a ``jsonl`` export: one transaction per feature, natural keys, so importing the
    same file again changes nothing. Stops at the first malformed line (earlier features stay
    imported; fix the line and re-run)."""
    progress = progress or no_progress
    summary = ImportSummary()
    pending: list[PendingFloor] = []
    total = _count_lines(path)
    try:
        for done, (number, raw) in enumerate(_read_lines(path), 1):
            pending += _import_line(database, path, number, raw, summary)
            progress(done, total)
    finally:  # also when a bad line stops the import: link what the good lines allow
        summary.unresolved_floors = resolve_floors(database, pending, summary)
    return summary


def _import_line(database: Database, path: Path, number: int, raw: bytes,
                 summary: ImportSummary) -> list[PendingFloor]:
    """Validate one line, then let the store write it in its own transaction."""
    record = _parse_line(path, number, raw)
    try:
        return import_record(database, record, summary)
    except RecordConflict as exc:
        raise InputError(f"{path}:{number}: cannot be stored ({exc.reason}); the line "
                         "contradicts the database — fix it and re-run") from None


def _count_lines(path: Path) -> int:
    """Non-blank lines (the progress total), counted without parsing."""
    return sum(1 for _ in _read_lines(path))


def _read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines with their 1-based numbers, streamed (bytes: decoding errors name the
    line)."""
    try:
        with path.open("rb") as fh:
            yield from ((n, line) for n, line in enumerate(fh, 1) if line.strip())
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror}); pass a file written by "
                         "`autolabel export --format jsonl`") from None


def _parse_line(path: Path, number: int, raw: bytes) -> dict[str, Any]:
    """Decode and validate one line; any problem is a one-line InputError naming the line."""
    try:
        record = json.loads(raw.decode("utf-8"))
        check_record(record)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as exc:
        raise InputError(f"{path}:{number}: malformed export line ({_first_line(exc)}); "
                         "fix or remove it and re-run — lines already imported are kept, "
                         "importing them again is a no-op") from None
    return record


def _first_line(exc: Exception) -> str:
    """First line of an exception message."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]
