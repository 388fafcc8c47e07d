"""A small database for the embedding tests: five features, each with an ok explanation and a
failed one (which must never be embedded)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from autolabel import db as dbm
from autolabel.db import Database, Explanation, Feature, SAERecord


@pytest.fixture
def database(sqlite_url: str) -> Iterator[Database]:
    database = dbm.open_database(sqlite_url)
    with database.session() as s:
        sae = SAERecord(name="s", source="t", hook_name="h", layer=1, d_in=4, d_sae=8,
                        architecture="topk", content_hash="c")
        s.add(sae)
        s.flush()
        for i in range(5):
            feature = Feature(sae_id=sae.id, index=i)
            s.add(feature)
            s.flush()
            s.add(Explanation(feature_id=feature.id, explainer="llm", text=f"text number {i}",
                              status="ok"))
            s.add(Explanation(feature_id=feature.id, explainer="llm", candidate=1, text=None,
                              status="parse_error"))
    yield database
    database.close()
