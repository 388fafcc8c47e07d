"""Migration 0011: ``examples.split`` gains ``validation`` (and room for it: VARCHAR(16) on
PostgreSQL), ``work_items`` is dropped; a database made by the current release migrates."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import inspect, select, text

from autolabel import db as dbm
from autolabel.collect import FeatureResult
from autolabel.examples import Example
from autolabel.store import store_feature_results
from tests.db.rows import sae_row

PRISTINE = Path("/tmp/base_pristine.db")  # the previous release's main job (read-only)


def _result(split: str) -> FeatureResult:
    example = Example(split=split, kind="top", bin=None, rank=0, document_id="doc:1", start=0,
                      token_ids=np.arange(4, dtype=np.int32),
                      activations=np.ones(4, np.float32), max_activation=1.0)
    return FeatureResult(7, 10, 4, 0.4, 1.0, 0.4, 1.0, [0] * 32, [0.0] * 33, [example])


def _store_validation_example(database: dbm.Database) -> None:
    with database.session() as s:
        sae = sae_row(s)
        collection = dbm.Collection(sae_id=sae.id, key="k", model_id="m", layer=2, corpus="c",
                                    corpus_fingerprint="f", window=8, seed=0, settings={})
        s.add(collection)
        s.flush()
        store_feature_results(s, sae.id, collection.id, [_result("validation")])
    with database.session() as s:
        assert list(s.scalars(select(dbm.Example.split))) == ["validation"]


def test_validation_examples_store_on_sqlite(sqlite_url: str) -> None:
    database = dbm.open_database(sqlite_url)
    assert "work_items" not in inspect(database.engine).get_table_names()
    _store_validation_example(database)


@pytest.mark.postgres
def test_validation_examples_store_on_postgres(pg_url: str) -> None:
    database = dbm.open_database(pg_url)
    assert dbm.schema_drift(database.engine) == []
    assert "work_items" not in inspect(database.engine).get_table_names()
    _store_validation_example(database)


def test_a_current_release_database_migrates(tmp_path: Path) -> None:
    if not PRISTINE.is_file():
        pytest.skip("no database of the previous release at /tmp/base_pristine.db")
    path = tmp_path / "old.db"
    shutil.copy(PRISTINE, path)
    with dbm.open_database(str(path), migrate=False).engine.begin() as conn:
        before = conn.execute(text("SELECT split, count(*) FROM examples GROUP BY split")).all()
    database = dbm.open_database(str(path))
    assert dbm.current_revision(database.engine) == dbm.head_revision()
    assert dbm.schema_drift(database.engine) == []
    assert "work_items" not in inspect(database.engine).get_table_names()
    with database.engine.begin() as conn:
        after = conn.execute(text("SELECT split, count(*) FROM examples GROUP BY split")).all()
        assert sorted(after) == sorted(before)  # every old example kept, none relabelled
        conn.execute(text("UPDATE examples SET split = 'validation' WHERE id = "
                          "(SELECT min(id) FROM examples)"))


def test_a_database_at_the_landed_head_stores_validation_examples(sqlite_url: str) -> None:
    """The previous release shipped 0005-0008 as placeholders: its databases sit at 0008 with
    the two-split CHECK. Opening one upgrades it (0009-0012) so the collect stage can store."""
    dbm.upgrade(dbm.open_database(sqlite_url, migrate=False).engine, "0008")
    database = dbm.open_database(sqlite_url)
    assert dbm.schema_drift(database.engine) == []
    _store_validation_example(database)


@pytest.mark.postgres
def test_a_postgres_database_at_the_landed_head_stores_validation_examples(pg_url: str) -> None:
    dbm.upgrade(dbm.open_database(pg_url, migrate=False).engine, "0008")
    database = dbm.open_database(pg_url)
    assert dbm.schema_drift(database.engine) == []
    _store_validation_example(database)
