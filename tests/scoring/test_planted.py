"""Planted-rule features: rules fire where they should, splits are by document, wrong
descriptions are another rule's and fixed by seed."""

from __future__ import annotations

from autolabel.scoring.planted import (
    SANITY_TEXTS,
    build_planted,
    corpus_windows,
    planted_features,
    sanity_sequences,
    word_tokenize,
    wrong_description,
)


def test_at_least_twelve_distinct_rules() -> None:
    features = planted_features()
    assert len(features) >= 12
    assert len({f.name for f in features}) == len(features)
    assert len({f.description for f in features}) == len(features)


def test_rules_fire_on_the_expected_tokens() -> None:
    by_name = {f.name: f for f in planted_features()}
    assert by_name["months"].rule(" March") == 1.0 and by_name["months"].rule(" marching") == 0
    assert by_name["digits"].rule("1998") == 1.0 and by_name["digits"].rule("x1") == 0
    assert by_name["closing"].rule(")") == 1.0 and by_name["closing"].rule("(") == 0
    assert by_name["pronouns"].rule(" She") == 1.0 and by_name["pronouns"].rule(" it") == 0
    assert by_name["capitalised"].rule(" Paris") == 1.0 and by_name["capitalised"].rule("IBM") == 0
    assert by_name["plurals"].rule(" cats") == 1.0 and by_name["plurals"].rule(" was") == 0


def test_every_rule_fires_in_the_sanity_set() -> None:
    for feature in planted_features():
        seqs = sanity_sequences(feature)
        assert len(seqs) == len(SANITY_TEXTS)
        assert any(a > 0 for s in seqs for a in s.activations), feature.name


def test_wrong_description_is_another_rule_and_seeded() -> None:
    features = planted_features()
    for i, feature in enumerate(features):
        wrong = wrong_description(i)
        assert wrong != feature.description
        assert wrong in {f.description for f in features}
        assert wrong == wrong_description(i)


def test_build_planted_splits_by_document() -> None:
    docs = [(f"doc{i}", "In March she saw 3 red dogs and two cats (in France). " * 3)
            for i in range(40)]
    windows = corpus_windows(docs, word_tokenize, window=12)
    data = build_planted(windows, n_top=4, n_random=2)
    assert len(data) == len(planted_features())
    for item in data:
        train_docs = {s.document_id for s in item.train}
        test_docs = {s.document_id for s in item.test}
        assert train_docs and test_docs and not train_docs & test_docs
        tops = [s for s in item.test if s.kind == "top"]
        assert all(max(s.activations) > 0 for s in tops)
        if item.feature.name in ("months", "digits", "colours", "animals", "countries"):
            assert len(tops) == 4, item.feature.name
