"""The persistent vector index: saved beside the database, opened as a memory map, updated
incrementally by `autolabel embed`, rebuilt when it no longer fits the table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, text, update

from autolabel import db as dbm
from autolabel.db import Database, Embedding, Explanation
from autolabel.search import (
    SearchFilters,
    index_dir,
    index_explanations,
    open_index,
    search,
    semantic_candidates,
    sync_index,
)
from autolabel.search import vectors as vec
from autolabel.search.ranking import exact_candidates
from tests.search.helpers import HASH, add_explanation, add_feature, add_sae, refs


def _files(database: Database) -> dict[str, Path]:
    folder = index_dir(database)
    assert folder is not None
    return {p.suffix: p for p in folder.iterdir() if p.suffix in (".usearch", ".json")}


def _meta(database: Database) -> dict[str, Any]:
    return dict(json.loads(_files(database)[".json"].read_text()))


def test_index_is_saved_beside_the_sqlite_file(database: Database,
                                               small: dict[str, Any]) -> None:
    count, meta = index_explanations(database, HASH)
    assert count == 6 and meta is not None and meta.size == 6
    folder = index_dir(database)
    assert folder == Path(str(dbm.sqlite_path(database.url)) + ".vectors")
    assert set(_files(database)) == {".usearch", ".json"}
    assert _meta(database)["model"] == HASH.name and _meta(database)["dim"] == HASH.dim
    # A second run has nothing to embed and leaves the file as it is.
    build = _meta(database)["build"]
    assert index_explanations(database, HASH)[0] == 0 and _meta(database)["build"] == build


def test_open_maps_the_file_instead_of_rebuilding(database: Database, small: dict[str, Any],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    index_explanations(database, HASH)
    vec.clear_open_indexes()
    monkeypatch.setattr(vec, "build_index", lambda *a: pytest.fail("rebuilt a fitting index"))
    with database.engine.connect() as conn:
        opened = open_index(database, HASH.name, conn)
    assert len(opened) == 6 and len(opened.delta_keys) == 0
    assert opened.index.size == 6
    hits = search(database, "court citations", mode="semantic", embedder=HASH)
    assert hits[0].feature == "gemma-l6:3"
    assert hits[0].rank_score == pytest.approx(float(HASH.embed(["court citations"])[0]
                                                     @ HASH.embed(["citations of court cases"])[0]),
                                               abs=1e-6)  # re-scored exactly from float32


def test_new_vectors_are_searched_before_and_after_sync(database: Database,
                                                        small: dict[str, Any]) -> None:
    index_explanations(database, HASH)
    fid = add_feature(database, small["saes"][0], 9)
    add_explanation(database, fid, "violet indigo")
    from autolabel.embed import embed_missing

    assert embed_missing(database, HASH) == 1  # not synced: the search uses an exact delta
    with database.engine.connect() as conn:
        opened = open_index(database, HASH.name, conn)
        assert len(opened.delta_keys) == 1 and opened.meta.size == 6
    assert search(database, "violet indigo", mode="semantic", embedder=HASH)[0].feature == \
        "gemma-l6:9"
    meta = sync_index(database, HASH.name)  # incremental: added to the saved file
    assert meta is not None and meta.size == 7
    with database.engine.connect() as conn:
        opened = open_index(database, HASH.name, conn)
        assert len(opened.delta_keys) == 0 and opened.meta.size == 7
    assert search(database, "violet indigo", mode="semantic", embedder=HASH)[0].feature == \
        "gemma-l6:9"


def test_replaced_table_or_reused_last_id_rebuilds(database: Database,
                                                   small: dict[str, Any]) -> None:
    index_explanations(database, HASH)
    first_build = _meta(database)["build"]
    # Re-embedding the newest explanation with another text reuses its id on SQLite: the
    # digest of the last row no longer matches, so the file is rebuilt, not trusted.
    last = max(small["explanations"][k] for k in small["explanations"] if k != "broken")
    with database.session() as s:
        s.execute(update(Explanation).where(Explanation.id == last)
                  .values(text="chess openings"))
    index_explanations(database, HASH)
    assert _meta(database)["build"] != first_build
    assert search(database, "chess openings", mode="semantic", embedder=HASH)[0].feature == \
        "gemma-l9:7"
    # Every vector dropped and re-embedded: SQLite restarts the ids at 1. Identical vectors
    # under identical ids keep the file; a changed first vector rebuilds it.
    second = _meta(database)["build"]
    with database.session() as s:
        s.execute(delete(Embedding))
    index_explanations(database, HASH)
    assert _meta(database)["build"] == second
    first = small["explanations"]["months"]
    with database.session() as s:
        s.execute(delete(Embedding))
        s.execute(update(Explanation).where(Explanation.id == first).values(text="tide pools"))
    index_explanations(database, HASH)
    assert _meta(database)["build"] != second and _meta(database)["size"] == 6
    assert search(database, "tide pools", mode="semantic", embedder=HASH)[0].feature == \
        "gemma-l6:1"


def test_deleted_vectors_never_show_and_many_deaths_rebuild(database: Database,
                                                             small: dict[str, Any]) -> None:
    index_explanations(database, HASH)
    court = small["explanations"]["court"]
    with database.session() as s:
        s.execute(delete(Explanation).where(Explanation.id == court))
    assert "gemma-l6:3" not in refs(search(database, "court citations", mode="semantic",
                                           embedder=HASH))
    with database.session() as s:  # now 3 of 6 keys are dead: over DEAD_SHARE
        s.execute(delete(Embedding).where(Embedding.explanation_id.in_(
            [small["explanations"][k] for k in ("pronouns", "colours9")])))
    meta = sync_index(database, HASH.name)
    assert meta is not None and meta.size == 3


def test_status_change_hides_a_candidate_from_semantic_search(database: Database,
                                                             small: dict[str, Any]) -> None:
    index_explanations(database, HASH)
    court = small["explanations"]["court"]
    with database.session() as s:  # the quality gate rejects it after it was embedded
        s.execute(update(Explanation).where(Explanation.id == court).values(status="rejected"))
    hits = search(database, "citations of court cases", mode="semantic", embedder=HASH)
    assert "gemma-l6:3" not in refs(hits)


def test_index_candidates_match_the_exact_scan(database: Database,
                                               small: dict[str, Any]) -> None:
    index_explanations(database, HASH)
    q = HASH.embed(["months of the year"])[0]
    with database.engine.connect() as conn:
        opened = open_index(database, HASH.name, conn)
        approx, _ = semantic_candidates(conn, opened, q, 10, SearchFilters())
        exact = exact_candidates(conn, HASH.name, q, 10, SearchFilters())
        filtered = exact_candidates(conn, HASH.name, q, 10, SearchFilters(layer=9))
    assert [c[0] for c in approx] == [c[0] for c in exact]
    assert np.allclose([c[2] for c in approx], [c[2] for c in exact], atol=1e-6)
    assert {c[1] for c in filtered} == set(small["features"][k] for k in ("months9", "colours9"))


def test_in_memory_database_gets_an_in_memory_index() -> None:
    database = dbm.open_database("sqlite://")
    sae = add_sae(database, "mem", 1)
    add_explanation(database, add_feature(database, sae, 0), "names of months")
    assert index_dir(database) is None
    count, meta = index_explanations(database, HASH)
    assert count == 1 and meta is None
    assert refs(search(database, "months", mode="semantic", embedder=HASH)) == ["mem:0"]
    database.close()


def test_unwritable_folder_falls_back_to_memory(database: Database, small: dict[str, Any],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from autolabel.embed import embed_missing

    embed_missing(database, HASH)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(vec, "_save", refuse)
    assert search(database, "court citations", mode="semantic", embedder=HASH)[0].feature == \
        "gemma-l6:3"
    folder = index_dir(database)
    assert folder is not None and not any(folder.glob("*.usearch"))


@pytest.mark.postgres
def test_postgres_index_lives_in_the_cache_dir(pg_url: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOLABEL_CACHE_DIR", str(tmp_path / "cache"))
    database = dbm.open_database(pg_url)
    try:
        sae = add_sae(database, "pg", 6)
        add_explanation(database, add_feature(database, sae, 1), "names of months")
        _count, meta = index_explanations(database, HASH)
        folder = index_dir(database)
        assert meta is not None and folder is not None
        assert folder.is_relative_to(tmp_path / "cache" / "vectors")
        assert "postgres" not in folder.name  # keyed by a hash of the URL, not the URL
        assert refs(search(database, "months", mode="semantic", embedder=HASH)) == ["pg:1"]
        with database.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM embeddings")).scalar_one() == 1
    finally:
        database.close()
