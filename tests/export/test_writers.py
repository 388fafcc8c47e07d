"""CSV export: one row per explanation, with its simulation score and floor."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sqlalchemy import select

from autolabel import db as dbm
from autolabel.export import export_features


def test_csv_one_row_per_explanation(source: tuple[dbm.Database, Path],
                                     tmp_path: Path) -> None:
    database, _ = source
    out = tmp_path / "features.csv"
    export_features(database, sae_name=None, fmt="csv", out=out)
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    with database.session() as s:
        n_expl = len(list(s.scalars(select(dbm.Explanation))))
    assert len(rows) == n_expl
    assert {"feature", "index", "density", "max_activation", "explainer", "llm_model",
            "status", "text", "is_best", "simulation_score", "simulation_floor"} <= set(rows[0])
    assert any(r["simulation_score"] and r["simulation_floor"] for r in rows)
