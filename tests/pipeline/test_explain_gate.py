"""Databases made by the current release: migration 0010 keeps every row, and the gate then
re-checks what was stored (explain stage and ``autolabel explain --recheck``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from autolabel import db as dbm
from autolabel.cli import cli
from autolabel.explain import GATE_VERSION, GateConfig
from autolabel.pipeline.explain import regate
from autolabel.prompting import FAMILIES, render_prompt
from autolabel.search import search
from tests.search.helpers import add_feature, add_sae

# What the previous release stored for four features (texts from issue 13), with the
# Bills prompt each LLM reply answered.
LEGACY = [
    ("tokens", 'tokens " among", " Among", "Among"', None, "ok"),
    ("llm", 'Python code such as "def" and "return"', ' Python code such as "def" and "return"',
     "copy"),
    ("llm", "the 0th month of the month of the month of the month",
     " the 0th month of the month of the month of the month", "loop"),
    ("llm", "the same token as the previous feature",
     " the same token as the previous feature.", "prompt_reference"),
    ("llm", 'the word "love"', ' the word "love"', "ok"),
]


def _legacy_prompt() -> str:
    among = [(["Not", " among", " them"], [0.0, 4.0, 0.0])]
    return str(render_prompt(FAMILIES["bills"], "completion", among))


def _legacy_database(path: Path) -> tuple[dbm.Database, list[int], list[int]]:
    """A database at revision 0009 (before the gate) holding LEGACY, scored and embedded,
    the loop marked best of its feature."""
    database = dbm.open_database(str(path), migrate=False)
    dbm.upgrade(database.engine, "0009")
    sae = add_sae(database, "old", 6)
    features = [add_feature(database, sae, i) for i in range(len(LEGACY))]
    with database.session() as s:
        collection = dbm.Collection(sae_id=sae, key="k" * 64, model_id="gemma", layer=6,
                                    corpus="c", window=64, seed=0, status="ok")
        s.add(collection)
        s.flush()
        for feature in s.scalars(select(dbm.Feature)):
            feature.collection_id = collection.id
        call = dbm.LLMCall(provider="local", model="gemma", request_hash="h" * 64,
                           prompt=_legacy_prompt(), status="ok")
        s.add(call)
        s.flush()
        call_id = call.id
    ids = []
    with database.engine.begin() as conn:
        for fid, (explainer, body, raw, _) in zip(features, LEGACY, strict=True):
            ids.append(int(conn.execute(text(
                "INSERT INTO explanations (feature_id, explainer, llm_model, prompt_hash, "
                "candidate, text, status, raw_reply, llm_call_id, settings, is_best, created_at)"
                " VALUES (:f, :e, '', 'p', 0, :t, 'ok', :r, :c, '{}', :b, '2026-01-01')"),
                {"f": fid, "e": explainer, "t": body, "r": raw,
                 "c": call_id if raw else None, "b": body.startswith("the 0th")}).lastrowid))
    with database.session() as s:
        for eid in ids:
            s.add(dbm.Score(explanation_id=eid, scorer="simulation", simulator="emb",
                            value=0.3, floor_value=0.0, status="ok", details={}))
            s.add(dbm.Embedding(explanation_id=eid, model="hash", dim=2,
                                vector=np.zeros(2, dtype=np.float32).tobytes()))
    return database, features, ids


def _count(database: dbm.Database, table: type) -> int:
    with database.session() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


def test_migration_keeps_rows_and_regate_rejects_the_garbage(tmp_path: Path) -> None:
    database, features, ids = _legacy_database(tmp_path / "old.db")
    dbm.upgrade(database.engine)
    assert dbm.schema_drift(database.engine) == []
    # nothing lost on the way: scores, embeddings, search rows, run links
    assert (_count(database, dbm.Score), _count(database, dbm.Embedding)) == (5, 5)
    assert len(search(database, "month", mode="keyword")) == 1
    with database.session() as s:
        assert {e.gate_version for e in s.scalars(select(dbm.Explanation))} == {None}

    report = regate(database, features, GateConfig())
    assert report["checked"] == 5 and report["transitions"] == {"ok -> rejected": 3}
    assert report["rejected"] == {"copy": 1, "loop": 1, "prompt_reference": 1}
    with database.session() as s:
        rows = {e.id: e for e in s.scalars(select(dbm.Explanation))}
        for eid, (_, body, raw, outcome) in zip(ids, LEGACY, strict=True):
            row = rows[eid]
            assert row.gate_version == GATE_VERSION
            if outcome == "ok":
                assert (row.status, row.text, row.reason) == ("ok", body, None)
                continue
            assert (row.status, row.reason, row.text) == ("rejected", outcome, None)
            assert row.raw_reply == raw and row.error.startswith(outcome)  # kept for review
            assert not row.is_best
        scored = set(s.scalars(select(dbm.Score.explanation_id)))
        embedded = set(s.scalars(select(dbm.Embedding.explanation_id)))
    kept = {eid for eid, legacy in zip(ids, LEGACY, strict=True) if legacy[3] == "ok"}
    assert scored == kept and embedded == kept  # never scored, never embedded
    assert search(database, "month", mode="keyword") == []  # never in the search index
    assert regate(database, features, GateConfig()) == {}  # judged rows are not re-judged
    again = regate(database, features, GateConfig(), force=True)
    assert again["checked"] == 5 and again["changed"] == 0
    database.close()


def test_recheck_command_prints_counts_per_reason(tmp_path: Path) -> None:
    database, _, _ = _legacy_database(tmp_path / "old.db")
    database.close()
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "old.db"), "explain", "--recheck",
                                      "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["gate"]["rejected"] == {"copy": 1, "loop": 1, "prompt_reference": 1}
    assert data["created"] == 0 and data["partial"] is False
    human = CliRunner().invoke(cli, ["--db", str(tmp_path / "old.db"), "explain",
                                     "--recheck"])
    assert human.exit_code == 0, human.output
    assert "Re-checked 5 stored candidates" in human.stdout
    assert "copy 1" in human.stdout and "loop 1" in human.stdout


PRISTINE = Path("/tmp/base_pristine.db")


@pytest.mark.skipif(not PRISTINE.exists(), reason="needs the previous release's database")
def test_previous_release_database_rechecked(tmp_path: Path) -> None:
    """The previous release's offline main job: after the upgrade the gate rejects the copies,
    prompt references and loops issue 13 counted among its 53 ok LLM labels."""
    path = tmp_path / "pristine.db"
    shutil.copy(PRISTINE, path)
    database = dbm.open_database(str(path))
    with database.session() as s:
        features = list(s.scalars(select(dbm.Feature.id)))
        before = _count(database, dbm.Score)
    report: dict[str, Any] = regate(database, features, GateConfig())
    rejected = report["rejected"]  # measured: copy 7, echo 3, loop 4, prompt_reference 4
    assert rejected.get("copy", 0) >= 7 and rejected.get("loop", 0) >= 4
    assert rejected.get("prompt_reference", 0) >= 4 and report["transitions"][
        "ok -> rejected"] >= 19
    with database.session() as s:
        ok_llm = s.scalar(select(func.count()).where(dbm.Explanation.status == "ok",
                                                     dbm.Explanation.explainer == "llm"))
        best_rejected = s.scalar(select(func.count()).where(
            dbm.Explanation.status == "rejected", dbm.Explanation.is_best.is_(True)))
    assert best_rejected == 0 and ok_llm is not None and ok_llm < 53
    assert _count(database, dbm.Score) < before
    database.close()
