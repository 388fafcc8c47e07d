"""Report identity: document ids unique across databases, report folders that never collide,
and the rule that one audit's report is never overwritten by another's without ``--force``.

A database's identity is its URL as autolabel normalises it (an SQLite file's absolute path,
a PostgreSQL server + database; the password never enters it). Its short hash prefixes every
document id (``AUD-1a2b3c4d-00001``) and names the default report folder of ``autolabel run``
together with a readable part (the SQLite file's stem or the PostgreSQL database name), so two
databases' first audits can no longer share an id or a report path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from autolabel.audit.taxonomy import AuditError
from autolabel.db import normalize_url, redact, sqlite_path

REPORT_HTML, REPORT_JSON = "report.html", "report.json"


def database_key(url: str) -> str:
    """8 hex digits naming a database (sha256 of its normalised, password-free URL)."""
    return hashlib.sha256(redact(normalize_url(url)).encode()).hexdigest()[:8]


def database_label(url: str) -> str:
    """A folder name for a database's reports: readable name + its key (``main-1a2b3c4d``)."""
    path = sqlite_path(normalize_url(url))
    if path is not None:
        name = path.stem
    else:
        try:
            name = make_url(normalize_url(url)).database or "db"
        except ArgumentError:
            name = "db"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "db"
    return f"{safe}-{database_key(url)}"


def document_id(url: str, audit_id: int) -> str:
    """The report's document id: unique across databases, stable for one audit row."""
    return f"AUD-{database_key(url)}-{audit_id:05d}"


def existing_report(out_dir: Path) -> dict[str, Any] | None:
    """The ``document`` block of the report already in ``out_dir`` (None: no report there).

    A folder holding a report.html without a readable report.json counts as a foreign report
    (``{}``): we cannot tell whose it is, so it is not ours to replace.
    """
    js, html = out_dir / REPORT_JSON, out_dir / REPORT_HTML
    if not js.is_file():
        return {} if html.is_file() else None
    try:
        data = json.loads(js.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    doc = data.get("document") if isinstance(data, dict) else None
    return dict(doc) if isinstance(doc, dict) else {}


def check_overwrite(out_dir: Path, doc_id: str | None, force: bool) -> None:
    """Refuse to replace another audit's report (any database) unless ``force``.

    Re-rendering the same audit's report is fine; anything else needs ``--force`` or another
    ``--out`` folder. With ``doc_id`` None (checked before the audit has an id, so before
    any model loads) every existing report counts as another audit's.
    """
    found = existing_report(out_dir)
    if force or found is None or found.get("id") == doc_id:
        return
    other = found.get("id") or "a report of unknown origin"
    raise AuditError(f"{out_dir} already holds {other} (another audit's report); pass another "
                     "--out folder, or --force to overwrite it")


def report_is(html_path: Path, doc_id: str | None) -> bool:
    """Whether ``html_path`` still holds the report of the audit with ``doc_id``."""
    if not html_path.is_file():
        return False
    if doc_id is None:  # an audit from before document ids: the file is all we can check
        return True
    found = existing_report(html_path.parent)
    return found is not None and found.get("id") == doc_id
