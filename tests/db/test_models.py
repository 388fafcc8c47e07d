"""Models: natural identities are unique, statuses are checked, foreign keys are enforced."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from autolabel import db as dbm
from tests.db.rows import sae_row


def test_unique_feature_identity(sqlite_url: str) -> None:
    database = dbm.open_database(sqlite_url)
    with pytest.raises(IntegrityError), database.session() as s:
        sae = sae_row(s)
        s.add_all([dbm.Feature(sae_id=sae.id, index=3), dbm.Feature(sae_id=sae.id, index=3)])
    with database.session() as s:  # the failed transaction left nothing behind
        assert s.query(dbm.SAERecord).count() == 0


def test_explanation_status_checked_and_unique(sqlite_url: str) -> None:
    database = dbm.open_database(sqlite_url)
    with database.session() as s:
        feature = dbm.Feature(sae_id=sae_row(s).id, index=0)
        s.add(feature)
        s.flush()
        fid = feature.id
    with pytest.raises(IntegrityError), database.session() as s:
        s.add(dbm.Explanation(feature_id=fid, explainer="llm", text="x", status="great"))
    with pytest.raises(IntegrityError), database.session() as s:
        s.add_all([dbm.Explanation(feature_id=fid, explainer="tokens", text="a", status="ok"),
                   dbm.Explanation(feature_id=fid, explainer="tokens", text="b", status="ok")])


def test_foreign_keys_enforced(sqlite_url: str) -> None:
    database = dbm.open_database(sqlite_url)
    with pytest.raises(IntegrityError), database.session() as s:
        s.add(dbm.Feature(sae_id=999, index=0))
