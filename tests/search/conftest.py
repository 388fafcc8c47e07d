"""Search fixtures: a fresh vector cache per test, a migrated database, a small corpus."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from autolabel import db as dbm
from autolabel.db import Database
from autolabel.search import clear_index_cache
from tests.search.helpers import (
    add_explanation,
    add_feature,
    add_flag,
    add_sae,
    add_score,
)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_index_cache()
    yield
    clear_index_cache()


@pytest.fixture
def database(sqlite_url: str) -> Iterator[Database]:
    database = dbm.open_database(sqlite_url)
    yield database
    database.close()


@pytest.fixture
def small(database: Database) -> dict[str, Any]:
    """Two SAEs, a handful of features with scores, flags and several explainers."""
    a, b = add_sae(database, "gemma-l6", 6), add_sae(database, "gemma-l9", 9)
    f = {
        "months": add_feature(database, a, 1, density=0.002),
        "pronouns": add_feature(database, a, 2),
        "court": add_feature(database, a, 3),
        "months9": add_feature(database, b, 1),
        "colours9": add_feature(database, b, 7),
    }
    e = {
        "months": add_explanation(database, f["months"], "names of months like January"),
        "months_tok": add_explanation(database, f["months"], "months of the year tokens",
                                      explainer="tokens"),
        "pronouns": add_explanation(database, f["pronouns"], "female pronouns she and her"),
        "court": add_explanation(database, f["court"], "citations of court cases"),
        "months9": add_explanation(database, f["months9"], "month names in dates"),
        "colours9": add_explanation(database, f["colours9"], "colour words red green blue"),
        "broken": add_explanation(database, f["court"], None, status="parse_error",
                                  candidate=1),
    }
    add_score(database, e["months"], 0.4, 0.05)
    add_score(database, e["months_tok"], 0.7, 0.1)
    add_score(database, e["months_tok"], 0.9, 0.2, scorer="detection")
    add_score(database, e["months9"], 0.2, 0.01)
    add_flag(database, a, f["pronouns"], "gender")
    return {"saes": (a, b), "features": f, "explanations": e}
