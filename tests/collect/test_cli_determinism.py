"""The real CLI: the same config gives the same database whatever the batch size or feature
grouping (18.1); three splits, no document in two (13.2); small budgets warn (18.7); a failed
collect leaves no SAE row (18.8)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from autolabel.cli import cli
from tests.collect.snapshots import collected, sae_rows
from tests.executors.conftest import tiny_config_text
from tests.executors.conftest import tiny_parts as tiny_parts  # noqa: F401 - fixture


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """The tiny model gains nothing from threads; on a loaded 2-core machine two OpenMP
    threads made each of its matmuls ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def collect(parts: dict[str, Path], db: Path, *args: str, **keys: object) -> Result:
    config = db.with_suffix(".toml")
    config.write_text(tiny_config_text(parts, **keys))
    return CliRunner().invoke(cli, ["--db", str(db), "--config", str(config), "--json",
                                    "collect", *args])


@pytest.mark.slow
def test_batch_size_and_feature_groups_give_the_same_database(
        tiny_parts: dict[str, Path], tmp_path: Path) -> None:
    one = collect(tiny_parts, tmp_path / "one.db", batch_size=4)
    assert one.exit_code == 0, one.output
    grouped = tmp_path / "grouped.db"
    for features in ("0:13", "13:32"):
        part = collect(tiny_parts, grouped, "--features", features, batch_size=7)
        assert part.exit_code == 0, part.output
    want = collected(tmp_path / "one.db")
    assert collected(grouped) == want
    assert {e[1] for e in want["examples"]} == {"train", "validation", "test"}
    assert {(e[1], e[2]) for e in want["examples"] if e[2] == "random"} == {
        ("validation", "random"), ("test", "random")}


@pytest.mark.slow
def test_no_document_is_in_two_splits(tiny_parts: dict[str, Path], tmp_path: Path) -> None:
    result = collect(tiny_parts, tmp_path / "s.db")
    assert result.exit_code == 0, result.output
    splits: dict[str, set[str]] = {}
    for example in collected(tmp_path / "s.db")["examples"]:
        splits.setdefault(example[5], set()).add(example[1])
    assert len(splits) > 20 and all(len(s) == 1 for s in splits.values())


def test_a_tiny_budget_warns_which_knob_fixes_it(tiny_parts: dict[str, Path],
                                                 tmp_path: Path) -> None:
    result = collect(tiny_parts, tmp_path / "w.db", tokens=60)
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    assert warnings and all("[collect] tokens" in w for w in warnings)
    assert any("no documents" in w for w in warnings)


def test_a_failed_collect_leaves_no_sae_row(tiny_parts: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    assert CliRunner().invoke(cli, ["--db", str(db), "db", "upgrade"]).exit_code == 0
    empty = tmp_path / "empty.txt"
    empty.write_text("the\n")  # one short paragraph: no window at all
    parts = {**tiny_parts, "corpus": empty}
    result = collect(parts, db)
    assert result.exit_code != 0 and "Error:" in result.stderr
    assert sae_rows(db) == 0
