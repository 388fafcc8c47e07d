"""Reports never overwrite another database's report: document ids unique across databases,
default folders per database, and another audit's report refused without --force."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from autolabel.audit.documents import database_key, database_label, document_id
from autolabel.audit.run import run_audit
from autolabel.audit.taxonomy import AuditError
from autolabel.config import Config
from autolabel.db import Audit, open_database
from autolabel.pipeline import default_report_dir
from tests.audit.fakes import audit_ctx, planted_sae, tiny_audit_subject

CONFIG = Config.model_validate({"audit": {"n_boot": 50, "n_random": 10}})


def test_database_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "one" / "main.db", tmp_path / "two" / "main.db"
    assert database_key(str(a)) != database_key(str(b))
    monkeypatch.chdir(tmp_path)
    assert database_key("one/main.db") == database_key(f"sqlite:///{a}")  # same file
    pw = database_key("postgresql://me:secret@db:5432/autolabel")
    assert pw == database_key("postgresql://me:other@db:5432/autolabel")  # no password in it
    assert database_label(str(a)) == f"main-{database_key(str(a))}"
    assert database_label("postgresql://me@db/team").startswith("team-")
    assert document_id(str(a), 1) != document_id(str(b), 1)
    assert document_id(str(a), 7).endswith("-00007")
    config = Config()
    assert default_report_dir(config, "default", str(a)) != default_report_dir(
        config, "default", str(b))


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    subject = tiny_audit_subject()
    return subject, planted_sae(subject, {0: {"she", "her"}}, n_random=4)


def _audit(db_path: Path, tiny: tuple[Any, Any], out: Path, **kwargs: Any) -> Any:
    db = open_database(f"sqlite:///{db_path}")
    return run_audit(audit_ctx(db, *tiny, CONFIG), pairs="builtin", out_dir=out,
                     features=range(tiny[1].d_sae), **kwargs)


def test_second_database_cannot_overwrite_the_first_report(tmp_path: Path,
                                                            tiny: tuple[Any, Any]) -> None:
    out = tmp_path / "report"
    first = _audit(tmp_path / "a.db", tiny, out)
    assert first.document_id == document_id(str(tmp_path / "a.db"), 1)
    with pytest.raises(AuditError, match=f"already holds {first.document_id}") as info:
        _audit(tmp_path / "b.db", tiny, out)
    assert "\n" not in str(info.value) and "--force" in str(info.value)
    with open_database(f"sqlite:///{tmp_path / 'b.db'}").session() as s:
        assert s.query(Audit).count() == 0  # refused before anything was written
    second = _audit(tmp_path / "b.db", tiny, out, overwrite=True)
    assert second.document_id != first.document_id and second.audit_id == first.audit_id == 1
    facts = json.loads((out / "report.json").read_text())
    assert facts["document"]["id"] == second.document_id
    # the first database's audit no longer owns that report: it is redone, not reused
    with pytest.raises(AuditError, match="already holds"):
        _audit(tmp_path / "a.db", tiny, out)
    again = _audit(tmp_path / "a.db", tiny, out, overwrite=True)
    assert not again.skipped and again.audit_id == 2


def test_per_audit_folders_keep_every_report(tmp_path: Path, tiny: tuple[Any, Any]) -> None:
    out = tmp_path / "reports"
    first = _audit(tmp_path / "a.db", tiny, out, per_audit=True)
    reused = _audit(tmp_path / "a.db", tiny, out, per_audit=True)
    assert reused.skipped and reused.document_id == first.document_id
    forced = _audit(tmp_path / "a.db", tiny, out, per_audit=True, force=True)
    assert first.html_path.parent.name == first.document_id
    assert forced.html_path.parent.name == forced.document_id != first.document_id
    assert first.html_path.is_file() and forced.html_path.is_file()
    other = _audit(tmp_path / "b.db", tiny, out, per_audit=True)
    assert other.html_path.is_file() and first.html_path.is_file()
    assert other.document_id.split("-")[1] != first.document_id.split("-")[1]
