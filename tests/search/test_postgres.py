"""The PostgreSQL search path: tsvector keyword search, filters, vectors, drift."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, update

from autolabel import db as dbm
from autolabel.db import Explanation
from autolabel.embed import embed_missing
from autolabel.errors import NotFoundError
from autolabel.search import SearchFilters, search
from tests.search.helpers import (
    HASH,
    NASTY,
    add_explanation,
    add_feature,
    add_flag,
    add_sae,
    add_score,
    refs,
)


@pytest.mark.postgres
def test_postgres_search_path(pg_url: str) -> None:
    database = dbm.open_database(pg_url)
    try:
        assert database.dialect == "postgresql"
        assert dbm.schema_drift(database.engine) == []
        a, b = add_sae(database, "pg-l6", 6), add_sae(database, "pg-l9", 9)
        f1, f2, f3 = (add_feature(database, a, 1), add_feature(database, a, 2),
                      add_feature(database, b, 3))
        e1 = add_explanation(database, f1, "names of months like January")
        add_explanation(database, f2, "citations of court cases")
        add_explanation(database, f3, "month names in dates")
        add_explanation(database, f3, "refused", status="refused", candidate=1)
        add_score(database, e1, 0.6, 0.1)
        add_flag(database, a, f2, "gender")

        assert set(refs(search(database, "months", mode="keyword"))) == {"pg-l6:1", "pg-l9:3"}
        assert search(database, "refused", mode="keyword") == []
        for query in NASTY[:12]:
            search(database, query, mode="keyword")
        assert refs(search(database, "court colour", mode="keyword")) == ["pg-l6:2"]  # OR
        with pytest.raises(NotFoundError, match="autolabel embed"):
            search(database, "months", embedder=HASH)

        assert embed_missing(database, HASH) == 3
        assert embed_missing(database, HASH) == 0
        sem = search(database, "court cases", mode="semantic", embedder=HASH)
        assert sem[0].feature == "pg-l6:2"
        hyb = search(database, "months", embedder=HASH)
        assert {"pg-l6:1", "pg-l9:3"} <= set(refs(hyb)) and hyb[0].mode == "hybrid"
        top = hyb[[h.feature for h in hyb].index("pg-l6:1")]
        assert (top.score, top.floor) == (0.6, 0.1)

        for mode in ("keyword", "semantic", "hybrid"):
            def run(mode: str = mode, **kw: Any) -> list[str]:
                return refs(search(database, "months", mode=mode, embedder=HASH,
                                   filters=SearchFilters(**kw)))
            assert run(sae="pg-l9") == ["pg-l9:3"]
            assert run(layer=6) == ["pg-l6:1"] or mode != "keyword"
            assert run(min_score=0.5) == ["pg-l6:1"]
            assert run(explainer="tokens") == []
            assert set(run(flagged="gender")) <= {"pg-l6:2"}

        # The generated tsvector follows updates; a text change drops the stale embedding.
        with database.session() as s:
            s.execute(update(Explanation).where(Explanation.id == e1)
                      .values(text="violin and piano"))
        assert refs(search(database, "violin", mode="keyword")) == ["pg-l6:1"]
        assert embed_missing(database, HASH) == 1
        assert search(database, "violin piano", mode="semantic", embedder=HASH)[0].feature \
            == "pg-l6:1"
        with database.session() as s:
            s.execute(delete(Explanation).where(Explanation.id == e1))
        assert search(database, "violin", mode="keyword") == []
        assert dbm.schema_drift(database.engine) == []
    finally:
        database.close()
