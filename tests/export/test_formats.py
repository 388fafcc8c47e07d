"""export_features: every row of a feature in its JSONL record, ranges, progress, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autolabel import db as dbm
from autolabel.errors import InputError, NotFoundError
from autolabel.export import export_features


def test_export_covers_everything(source: tuple[dbm.Database, Path]) -> None:
    database, out = source
    lines = out.read_text().splitlines()
    assert len(lines) == 5
    records = [json.loads(line) for line in lines]
    assert [r["feature"]["index"] for r in records] == list(range(5))
    statuses = {e["status"] for r in records for e in r["explanations"]}
    # "Token\t10…" is garbage the quality gate stores as `rejected` (with its reason)
    assert {"ok", "refused", "rejected"} <= statuses
    scores = [s for r in records for e in r["explanations"] for s in e["scores"]]
    assert scores and any(s["floor_explanation"] for s in scores)
    assert any(e["embeddings"] for r in records for e in r["explanations"])
    assert all(r["examples"] and r["sae"]["content_hash"] for r in records)


def test_feature_range_and_progress(source: tuple[dbm.Database, Path], tmp_path: Path) -> None:
    database, _ = source
    seen: list[tuple[int, int]] = []
    out = tmp_path / "part.jsonl"
    n = export_features(database, sae_name="sae", fmt="jsonl", out=out, features="1:3",
                        progress=lambda done, total: seen.append((done, total)))
    assert n == 2 and seen[-1] == (2, 2)
    assert [json.loads(x)["feature"]["index"] for x in out.read_text().splitlines()] == [1, 2]


def test_export_errors(source: tuple[dbm.Database, Path], tmp_path: Path) -> None:
    database, _ = source
    with pytest.raises(InputError, match="unknown export format 'xml'"):
        export_features(database, sae_name=None, fmt="xml", out=tmp_path / "x")
    with pytest.raises(NotFoundError, match="no collected features"):
        export_features(database, sae_name=None, fmt="jsonl", out=None, features="20:30")
