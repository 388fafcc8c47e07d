"""Issue 13 in every export format: jsonl keeps the validation value, null summary, CI and
verdict losslessly (and round-trips them), every feature carries its label; csv and
Neuronpedia show the verdict; files written before these columns still import."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from autolabel import db as dbm
from autolabel.export import export_features, import_jsonl
from autolabel.export.writers import CSV_HEADER
from autolabel.store.records import SCORE_TRUST_FIELDS

TRUST = list(SCORE_TRUST_FIELDS)


def score_rows(database: dbm.Database) -> list[tuple[object, ...]]:
    """Every score's value and trust columns, keyed by its explanation's identity (ids differ
    between a database and its imported copy)."""
    with database.session() as s:
        rows = s.query(dbm.Score, dbm.Explanation, dbm.Feature.index).join(
            dbm.Explanation, dbm.Score.explanation_id == dbm.Explanation.id).join(
            dbm.Feature, dbm.Explanation.feature_id == dbm.Feature.id).all()
        return sorted(((idx, e.explainer, e.candidate, sc.scorer),
                       *(getattr(sc, k) for k in ["value", *TRUST])) for sc, e, idx in rows)


def test_jsonl_carries_the_trust_columns_and_the_label(source: tuple[dbm.Database, Path],
                                                       tmp_path: Path) -> None:
    database, out = source
    records = [json.loads(line) for line in out.read_text().splitlines()]
    scores = [s for r in records for e in r["explanations"] for s in e["scores"]]
    assert scores and all(set(TRUST) <= set(s) for s in scores)
    assert {s["verdict"] for s in scores if s["status"] == "ok"} <= {"trusted", "weak",
                                                                      "at_floor"}
    assert all(s["validation_value"] is not None for s in scores if s["status"] == "ok")
    labels = [r["label"] for r in records]
    assert all(lab["verdict"] in {"trusted", "weak", "at_floor", "rejected", "unscored"}
               for lab in labels)
    assert any(lab["selected_on"] == "validation" for lab in labels)
    for rec in records:  # the label is never a rejected candidate's text
        rejected = {e["text"] for e in rec["explanations"] if e["status"] == "rejected"}
        assert rec["label"]["text"] is None or rec["label"]["text"] not in rejected

    copy = dbm.open_database(str(tmp_path / "copy.db"))
    import_jsonl(copy, out)
    assert score_rows(copy) == score_rows(database)  # lossless, float for float
    again = tmp_path / "again.jsonl"
    export_features(copy, sae_name=None, fmt="jsonl", out=again)
    assert again.read_bytes() == out.read_bytes()


def test_a_file_made_before_the_trust_columns_still_imports(
        source: tuple[dbm.Database, Path], tmp_path: Path) -> None:
    _, out = source
    old = tmp_path / "old.jsonl"
    lines = []
    for line in out.read_text().splitlines():
        rec = json.loads(line)
        rec.pop("label")
        for expl in rec["explanations"]:
            for score in expl["scores"]:
                for key in TRUST:
                    score.pop(key)
        lines.append(json.dumps(rec))
    old.write_text("\n".join(lines) + "\n")
    copy = dbm.open_database(str(tmp_path / "old.db"))
    assert import_jsonl(copy, old).features == 5
    assert {row[2:] for row in score_rows(copy)} == {(None,) * len(TRUST)}


def test_csv_shows_verdicts(source: tuple[dbm.Database, Path], tmp_path: Path) -> None:
    database, _ = source
    path = tmp_path / "f.csv"
    export_features(database, sae_name=None, fmt="csv", out=path)
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == CSV_HEADER
    assert {"verdict", "validation_score", "ci_low", "ci_high", "null_p95"} <= set(CSV_HEADER)
    assert {r["verdict"] for r in rows} <= {"trusted", "weak", "at_floor", "rejected",
                                           "unscored"}
    assert all(r["verdict"] == "rejected" for r in rows if r["status"] == "rejected")
    best = [r for r in rows if r["is_best"] == "1"]
    assert best and all(r["selected_on"] == "validation" for r in best)


def test_neuronpedia_shows_verdicts(source: tuple[dbm.Database, Path], tmp_path: Path) -> None:
    database, _ = source
    folder = tmp_path / "np"
    export_features(database, sae_name=None, fmt="neuronpedia", out=folder,
                    load_tokenizer=lambda model: _Decoder())
    index = json.loads((folder / "index.json").read_text())
    assert all("verdict" in f for f in index["features"])
    item = json.loads((folder / f"{index['features'][0]['index']}.json").read_text())
    assert item["label"]["verdict"] in {"trusted", "weak", "at_floor", "rejected", "unscored"}
    scores = [s for e in item["explanations"] for s in e["scores"]]
    assert all("verdict" in s and "ciLow" in s and "nullP95" in s for s in scores)


class _Decoder:
    """Token ids as text without a tokenizer (this test is about scores, not tokens)."""

    def batch_decode(self, ids: list[list[int]]) -> list[str]:
        return [f"<{i[0]}>" for i in ids]
