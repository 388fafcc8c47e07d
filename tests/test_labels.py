"""The one label API (issue 13): chosen on validation only, reported on test, never a rejected
candidate, legacy choices marked "selected on test" — on a real SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from autolabel import db as dbm
from autolabel.store.labels import VERDICTS, choose, feature_labels, scored_rows
from autolabel.store.scores import add_score, mark_best
from tests.db.rows import sae_row


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dbm.Database]:
    """One migrated database for the module (migrating is the slow part); each test adds its
    own SAE."""
    handle = dbm.open_database(f"sqlite:///{tmp_path_factory.mktemp('labels') / 'l.db'}")
    yield handle
    handle.close()


def new_sae(session: Any) -> dbm.SAERecord:
    n = session.query(dbm.SAERecord).count()
    return sae_row(session, name=f"s{n}", content_hash=f"{n:064d}")


def add_feature(session: Any, sae: dbm.SAERecord, index: int) -> dbm.Feature:
    feature = dbm.Feature(sae_id=sae.id, index=index)
    session.add(feature)
    session.flush()
    return feature


def add_candidate(session: Any, feature: dbm.Feature, text: str, status: str = "ok",
                  candidate: int = 0, explainer: str = "llm") -> dbm.Explanation:
    expl = dbm.Explanation(feature_id=feature.id, explainer=explainer, llm_model="m",
                           prompt_hash="p", candidate=candidate, text=text, status=status)
    session.add(expl)
    session.flush()
    return expl


def score(session: Any, expl: dbm.Explanation, test: float | None,
          validation: float | None, verdict: str = "weak", simulator: str = "sim",
          details: dict[str, Any] | None = None) -> None:
    add_score(session, explanation_id=expl.id, scorer="simulation", simulator=simulator,
              value=test, floor_value=0.01, floor_explanation_id=None, n_examples=10,
              status="ok" if test is not None else "degenerate", details=details or {},
              run_id=None,
              validation_value=validation,
              trust={"null_p95": 0.05, "ci_low": 0.1, "ci_high": 0.3, "null_mean": 0.0,
                     "null_n": 100, "verdict": verdict})


def test_choice_is_by_validation_and_the_reported_score_is_test(database: dbm.Database) -> None:
    with database.session() as s:
        f = add_feature(s, new_sae(s), 0)
        a = add_candidate(s, f, "high on test, low on validation", candidate=0)
        b = add_candidate(s, f, "high on validation", candidate=1)
        score(s, a, test=0.90, validation=0.10)
        score(s, b, test=0.20, validation=0.50, verdict="trusted")
        mark_best(s, [f.id])
    with database.session() as s:
        label = feature_labels(s, [f.id])[f.id]
        best = [e.id for e in s.query(dbm.Explanation).filter_by(is_best=True)]
    assert label.explanation_id == b.id and best == [b.id]
    assert (label.score, label.validation_score) == (0.20, 0.50)
    assert label.selected_on == "validation" and label.verdict == "trusted"
    assert (label.floor, label.null_p95, label.ci_low, label.ci_high) == (0.01, 0.05, 0.1, 0.3)


def test_legacy_scores_without_validation_are_marked_selected_on_test(
        database: dbm.Database) -> None:
    with database.session() as s:
        f = add_feature(s, new_sae(s), 0)
        a, b = add_candidate(s, f, "a", candidate=0), add_candidate(s, f, "b", candidate=1)
        score(s, a, test=0.3, validation=None)
        score(s, b, test=0.4, validation=None)
    with database.session() as s:
        label = feature_labels(s, [f.id])[f.id]
    assert label.explanation_id == b.id and label.selected_on == "test"


def test_rejected_candidates_are_never_the_label(database: dbm.Database) -> None:
    with database.session() as s:
        sae = new_sae(s)
        mixed, rejected, empty, unscored = (add_feature(s, sae, i) for i in range(4))
        loop = add_candidate(s, mixed, "the month of the month of the month", candidate=0)
        plain = add_candidate(s, mixed, "months of the year", candidate=1)
        score(s, loop, test=0.9, validation=0.9)
        score(s, plain, test=0.1, validation=0.1)
        loop.status = "rejected"  # the gate re-checked it after it was scored
        add_candidate(s, rejected, "the same token as the previous feature", "rejected")
        add_candidate(s, unscored, "numbers")
        mark_best(s, [mixed.id, rejected.id, empty.id, unscored.id])
    with database.session() as s:
        labels = feature_labels(s, [mixed.id, rejected.id, empty.id, unscored.id])
        assert not s.get(dbm.Explanation, loop.id).is_best
    assert labels[mixed.id].text == "months of the year"
    assert (labels[rejected.id].text, labels[rejected.id].verdict) == (None, "rejected")
    assert labels[rejected.id].explanation_id is None
    assert (labels[empty.id].text, labels[empty.id].verdict) == (None, "unscored")
    assert (labels[unscored.id].text, labels[unscored.id].verdict) == ("numbers", "unscored")
    assert all(lab.verdict in VERDICTS for lab in labels.values())


def test_one_simulator_per_feature_the_newest(database: dbm.Database) -> None:
    """Scores of two simulators are on different scales: only the newest one counts."""
    with database.session() as s:
        f = add_feature(s, new_sae(s), 0)
        a, b = add_candidate(s, f, "a", candidate=0), add_candidate(s, f, "b", candidate=1)
        score(s, a, test=0.9, validation=0.9, simulator="old")
        score(s, b, test=0.1, validation=0.1, simulator="old")
        score(s, b, test=0.2, validation=0.3, simulator="new")
    with database.session() as s:
        label = feature_labels(s, [f.id])[f.id]
    assert (label.explanation_id, label.simulator, label.score) == (b.id, "new", 0.2)


def test_choose_breaks_ties_towards_the_older_candidate(database: dbm.Database) -> None:
    with database.session() as s:
        f = add_feature(s, new_sae(s), 0)
        a, b = add_candidate(s, f, "a", candidate=0), add_candidate(s, f, "b", candidate=1)
        score(s, a, test=0.1, validation=0.5)
        score(s, b, test=0.9, validation=0.5)
        chosen = choose(scored_rows(s, [f.id], "simulation")[f.id])
        assert chosen is not None and chosen[0].id == a.id


def test_undefined_validation_scores_never_fall_back_to_test(database: dbm.Database) -> None:
    """A feature collected with a validation split that never fires in it: no candidate has a
    validation value, and choosing by test would put test back in the choice. The oldest
    candidate is the label, marked as chosen on no split (not "test")."""
    undefined = {"validation": {"status": "degenerate", "value": None}}
    with database.session() as s:
        f = add_feature(s, new_sae(s), 0)
        a, b = add_candidate(s, f, "a", candidate=0), add_candidate(s, f, "b", candidate=1)
        score(s, a, test=0.1, validation=None, details=undefined)
        score(s, b, test=0.9, validation=None, details=undefined)
        mark_best(s, [f.id])
    with database.session() as s:
        label = feature_labels(s, [f.id])[f.id]
        assert (label.explanation_id, label.score, label.selected_on) == (a.id, 0.1, "")
        assert s.get(dbm.Explanation, a.id).is_best and not s.get(dbm.Explanation, b.id).is_best
