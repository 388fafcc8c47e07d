"""import_jsonl: byte-identical round trips, idempotent re-imports, floors, bad lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from autolabel import db as dbm
from autolabel.errors import InputError
from autolabel.export import export_features, import_jsonl
from autolabel.store import imports as store_imports

TABLES = ["saes", "collections", "features", "examples", "explanations", "scores",
          "embeddings"]


def snapshot(database: dbm.Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every exported table, all columns (timestamps included)."""
    with database.engine.connect() as conn:
        return {t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY id"))]
                for t in TABLES}


def fresh(tmp_path: Path, name: str = "copy.db") -> dbm.Database:
    return dbm.open_database(str(tmp_path / name))


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


def test_import_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        import_jsonl(fresh(tmp_path), tmp_path / "missing.jsonl")
    other = tmp_path / "other.jsonl"
    other.write_text('{"format": "something-else"}\n')
    with pytest.raises(InputError, match="other.jsonl:1: .*format"):
        import_jsonl(fresh(tmp_path), other)


def test_line_the_database_refuses_names_it(source: tuple[dbm.Database, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _, out = source
    line = out.read_text().splitlines()[0]
    bad = tmp_path / "refused.jsonl"
    bad.write_text(line + "\n")

    def refuse(*args: Any) -> Any:
        raise IntegrityError("INSERT ...", {}, Exception("UNIQUE constraint failed: x.y\nmore"))

    monkeypatch.setattr(store_imports, "_import_record", refuse)
    with pytest.raises(InputError, match=r"refused\.jsonl:1: cannot be stored \(UNIQUE "
                       r"constraint failed: x\.y\); the line contradicts the database") as err:
        import_jsonl(fresh(tmp_path), bad)
    assert "\n" not in str(err.value)
