"""Export and import: lossless JSONL round trips, idempotent imports, Neuronpedia JSON, CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from autolabel import db as dbm
from autolabel.config import load_config
from autolabel.embed import HashEmbedder, embed_missing
from autolabel.errors import InputError, NotFoundError
from autolabel.export import export_features, import_jsonl
from autolabel.llm import FakeClient
from autolabel.pipeline import collect_stage, explain_stage, score_stage
from tests.tiny import WORDS, tiny_corpus, tiny_model_dir, tiny_sae_dir

TABLES = ["saes", "collections", "features", "examples", "explanations", "scores",
          "embeddings"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[dbm.Database, Path]:
    """A database with collected, explained (incl. failures), scored and embedded features,
    and its JSONL export."""
    root = tmp_path_factory.mktemp("export")
    model, sae = tiny_model_dir(root / "model"), tiny_sae_dir(root / "sae")
    overrides = {"subject.model": str(model), "subject.layer": 2, "sae.sae": str(sae),
                 "corpus.source": str(tiny_corpus(root / "corpus.txt")),
                 "corpus.window": 16, "collect.tokens": 3000, "collect.features": "0:5",
                 "scoring.simulator": "embedding", "search.embedding_model": "hash",
                 "explain.explainers": ["tokens", "llm"]}
    config = load_config(overrides=overrides, environ={})
    database = dbm.open_database(str(root / "source.db"))
    collect_stage(config, database)
    client = FakeClient(default="the word 'the' and other short function words")
    client.enqueue("I cannot help with that.", "Token\t10\nToken\t3")
    explain_stage(config, database, client=client)
    score_stage(config, database)
    embed_missing(database, HashEmbedder(dim=8))
    out = root / "features.jsonl"
    export_features(database, sae_name=None, fmt="jsonl", out=out)
    return database, out


def snapshot(database: dbm.Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every exported table, all columns (timestamps included)."""
    with database.engine.connect() as conn:
        return {t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY id"))]
                for t in TABLES}


def fresh(tmp_path: Path, name: str = "copy.db") -> dbm.Database:
    return dbm.open_database(str(tmp_path / name))


def test_export_covers_everything(source: tuple[dbm.Database, Path]) -> None:
    database, out = source
    lines = out.read_text().splitlines()
    assert len(lines) == 5
    records = [json.loads(line) for line in lines]
    assert [r["feature"]["index"] for r in records] == list(range(5))
    statuses = {e["status"] for r in records for e in r["explanations"]}
    assert {"ok", "refused", "parse_error"} <= statuses
    scores = [s for r in records for e in r["explanations"] for s in e["scores"]]
    assert scores and any(s["floor_explanation"] for s in scores)
    assert any(e["embeddings"] for r in records for e in r["explanations"])
    assert all(r["examples"] and r["sae"]["content_hash"] for r in records)


def test_round_trip_is_byte_identical(source: tuple[dbm.Database, Path],
                                      tmp_path: Path) -> None:
    _, out = source
    copy = fresh(tmp_path)
    summary = import_jsonl(copy, out)
    assert summary.features == 5 and summary.inserted > 0 and summary.updated == 0
    assert summary.unresolved_floors == 0
    again = tmp_path / "again.jsonl"
    assert export_features(copy, sae_name=None, fmt="jsonl", out=again) == 5
    assert again.read_bytes() == out.read_bytes()


def test_import_twice_changes_nothing(source: tuple[dbm.Database, Path],
                                      tmp_path: Path) -> None:
    _, out = source
    copy = fresh(tmp_path)
    import_jsonl(copy, out)
    before = snapshot(copy)
    summary = import_jsonl(copy, out)
    assert (summary.features, summary.inserted, summary.updated) == (5, 0, 0)
    assert snapshot(copy) == before


def test_import_into_the_source_changes_nothing(source: tuple[dbm.Database, Path]) -> None:
    database, out = source
    before = snapshot(database)
    summary = import_jsonl(database, out)
    assert (summary.inserted, summary.updated) == (0, 0)
    assert snapshot(database) == before


def test_partial_import_then_full_links_floors(source: tuple[dbm.Database, Path],
                                               tmp_path: Path) -> None:
    database, out = source
    part = tmp_path / "part.jsonl"
    export_features(database, sae_name=None, fmt="jsonl", out=part, features="0")
    copy = fresh(tmp_path)
    assert import_jsonl(copy, part).unresolved_floors >= 1  # floors come from other features
    full = import_jsonl(copy, out)
    assert full.unresolved_floors == 0 and full.updated >= 1  # the dangling floors now linked
    again = tmp_path / "again.jsonl"
    export_features(copy, sae_name=None, fmt="jsonl", out=again)
    assert again.read_bytes() == out.read_bytes()


def test_feature_range_and_progress(source: tuple[dbm.Database, Path], tmp_path: Path) -> None:
    database, _ = source
    seen: list[tuple[int, int]] = []
    out = tmp_path / "part.jsonl"
    n = export_features(database, sae_name="sae", fmt="jsonl", out=out, features="1:3",
                        progress=lambda done, total: seen.append((done, total)))
    assert n == 2 and seen[-1] == (2, 2)
    assert [json.loads(x)["feature"]["index"] for x in out.read_text().splitlines()] == [1, 2]


def test_neuronpedia_directory(source: tuple[dbm.Database, Path], tmp_path: Path) -> None:
    database, _ = source
    out = tmp_path / "np"
    assert export_features(database, sae_name=None, fmt="neuronpedia", out=out) == 5
    index = json.loads((out / "index.json").read_text())
    assert [f["index"] for f in index["features"]] == [str(i) for i in range(5)]
    feat = json.loads((out / "0.json").read_text())
    for key in ("modelId", "layer", "index", "hookName", "saeHash", "frac_nonzero",
                "maxActApprox", "freq_hist_data_bar_heights", "explanations", "activations"):
        assert key in feat
    assert feat["index"] == "0" and feat["activations"]
    for act in feat["activations"]:
        assert len(act["tokens"]) == len(act["values"]) == len(act["tokenIds"]) > 0
        assert set(act["tokens"]) <= set(WORDS) | {"<bos>", "<eos>", "<unk>", "<pad>"}
        assert act["values"][act["maxValueTokenIndex"]] == max(act["values"])
    expl = feat["explanations"][0]
    assert {"description", "explanationModelName", "typeName", "status", "scores"} <= set(expl)
    scored = [s for e in feat["explanations"] for s in e["scores"]]
    assert all("floor" in s for s in scored)


def test_neuronpedia_single_file(source: tuple[dbm.Database, Path], tmp_path: Path) -> None:
    database, _ = source
    out = tmp_path / "np.json"
    export_features(database, sae_name=None, fmt="neuronpedia", out=out, features="2,4")
    items = json.loads(out.read_text())
    assert [i["index"] for i in items] == ["2", "4"]


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


@pytest.mark.parametrize("corrupt", [
    lambda line: line[: len(line) // 2],  # truncated JSON
    lambda line: line.replace('"split":"train"', '"split":"dev"', 1),
    lambda line: line.replace('"token_ids":"', '"token_ids":"!', 1),
    lambda line: line.replace('"d_sae":', '"d_sae_":', 1),
])
def test_malformed_line_names_it_and_writes_nothing_of_it(
        source: tuple[dbm.Database, Path], tmp_path: Path, corrupt: Any) -> None:
    _, out = source
    lines = out.read_text().splitlines()
    lines[1] = corrupt(lines[1])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    copy = fresh(tmp_path)
    with pytest.raises(InputError, match=r"bad\.jsonl:2: ") as err:
        import_jsonl(copy, bad)
    assert "\n" not in str(err.value)
    with copy.session() as s:
        assert [f.index for f in s.scalars(select(dbm.Feature))] == [0]


def test_errors(source: tuple[dbm.Database, Path], tmp_path: Path) -> None:
    database, _ = source
    with pytest.raises(InputError, match="unknown export format 'xml'"):
        export_features(database, sae_name=None, fmt="xml", out=tmp_path / "x")
    with pytest.raises(NotFoundError, match="no collected features"):
        export_features(database, sae_name=None, fmt="jsonl", out=None, features="20:30")
    with pytest.raises(InputError, match="cannot read"):
        import_jsonl(fresh(tmp_path), tmp_path / "missing.jsonl")
    other = tmp_path / "other.jsonl"
    other.write_text('{"format": "something-else"}\n')
    with pytest.raises(InputError, match="other.jsonl:1: .*format"):
        import_jsonl(fresh(tmp_path), other)
