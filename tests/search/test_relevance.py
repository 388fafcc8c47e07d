"""Labelled relevance with the real MiniLM model: hybrid finds what keyword search misses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from autolabel import db as dbm
from autolabel.db import Database
from autolabel.embed import embed_missing
from autolabel.search import search
from tests.search.helpers import add_explanation, add_feature, add_sae, refs

CORPUS = [
    "names of months such as January, February and March",
    "female pronouns like she, her and hers",
    "male pronouns he, him and his",
    "citations of court cases, e.g. Smith v. Jones, 410 U.S. 113",
    "Python keywords such as def, class, return and import",
    "closing brackets and parentheses at the end of expressions",
    "colour words like red, green, blue and yellow",
    "French words and articles such as le, la, les, et, bonjour",
    "numbers written as digits, especially years and counts",
    "days of the week: Monday, Tuesday, Friday",
    "chemical element names such as oxygen, carbon and hydrogen",
    "URLs and web addresses beginning with http",
    "email addresses containing the @ sign",
    "negation words: not, never, no",
    "currency amounts with dollar signs and prices",
    "first-person plural pronouns we and us",
    "mathematical operators like plus, minus and equals signs",
    "HTML tags such as <div> and <p>",
    "country names, e.g. France, Germany, Japan",
    "animal names such as dog, cat and horse",
    "words about weather: rain, snow, storms",
    "sports terms like goal, match and tournament",
    "medical terms for diseases and symptoms",
    "the token 'the' at the start of sentences",
    "question marks ending interrogative sentences",
    "SQL keywords SELECT, FROM and WHERE",
    "family members: mother, father, sister, brother",
    "food and cooking ingredients like flour, sugar, butter",
    "musical instruments such as piano, guitar and violin",
    "emotions such as happiness, anger and sadness",
]

# query -> index into CORPUS (the feature index); True = a synonym query sharing no content word
QUERIES: list[tuple[str, int, bool]] = [
    ("lawsuit references", 3, True),
    ("calendar months", 0, False),
    ("words referring to women", 1, True),
    ("programming language reserved words", 4, True),
    ("closing parenthesis", 5, False),
    ("hues and shades", 6, True),
    ("French vocabulary", 7, False),
    ("numeric digits", 8, False),
    ("pets and livestock", 19, True),
    ("human feelings", 29, True),
]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    from autolabel.embed import LocalEmbedder

    path: Path = tmp_path_factory.mktemp("labelled") / "labelled.db"
    database = dbm.open_database(f"sqlite:///{path}")
    sae = add_sae(database, "minilm-test", 6)
    for index, body in enumerate(CORPUS):
        add_explanation(database, add_feature(database, sae, index), body)
    assert embed_missing(database, LocalEmbedder()) == len(CORPUS)
    yield database
    database.close()


@pytest.mark.slow
def test_labelled_relevance_hybrid_top3(labelled: Database) -> None:
    from autolabel.embed import LocalEmbedder

    embedder = LocalEmbedder()
    misses_keyword, caught_semantic, failures = [], [], []
    for query, target, synonym in QUERIES:
        want = f"minilm-test:{target}"
        hybrid = refs(search(labelled, query, limit=3, embedder=embedder))
        keyword = refs(search(labelled, query, mode="keyword", limit=3))
        semantic = refs(search(labelled, query, mode="semantic", limit=3, embedder=embedder))
        if want not in hybrid:
            failures.append((query, hybrid))
        if synonym and want not in keyword:
            misses_keyword.append(query)
            if want in semantic:
                caught_semantic.append(query)
    assert failures == []
    # Keyword search alone misses synonym queries that the embeddings catch.
    assert len(misses_keyword) >= 4, misses_keyword
    assert caught_semantic == misses_keyword


@pytest.mark.slow
def test_default_embedder_is_the_local_model(labelled: Database) -> None:
    hits = search(labelled, "lawsuit references", limit=1)  # no embedder given: MiniLM
    assert refs(hits) == ["minilm-test:3"]
