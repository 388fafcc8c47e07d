"""Server fixtures: the builder's database on SQLite and on a real PostgreSQL, served read-only
by the real app (TestClient for API/page tests; uvicorn on a free port for the browser)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from autolabel import db as dbm
from autolabel.search import clear_index_cache
from autolabel.serve import open_server
from autolabel.subject import load_tokenizer
from tests.serve.builder import HASH, build


def _pg_database(pg_server: str) -> str:
    import psycopg

    name = f"serve{int(time.time() * 1e6) % 10**12}"
    with psycopg.connect(f"{pg_server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{pg_server}/{name}"


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres",
                                                               marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """{"client": TestClient, "ids": …, "url": …} over a freshly built database."""
    root: Path = tmp_path_factory.mktemp(f"serve-{request.param}")
    previous = os.environ.get("AUTOLABEL_CACHE_DIR")
    os.environ["AUTOLABEL_CACHE_DIR"] = str(root / "cache")  # PostgreSQL's index lives there
    clear_index_cache()
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'serve.db'}"
    else:
        url = _pg_database(request.getfixturevalue("pg_server"))
    ids = build(url, root)
    database = dbm.open_database(url, migrate=False)
    app = open_server(database, load_tokenizer, embedder=HASH)
    try:
        with TestClient(app) as client:
            yield {"client": client, "ids": ids, "url": url, "database": database,
                   "dialect": request.param}
    finally:
        database.close()
        clear_index_cache()
        if previous is None:
            os.environ.pop("AUTOLABEL_CACHE_DIR", None)
        else:
            os.environ["AUTOLABEL_CACHE_DIR"] = previous
