"""Taxonomy and tier 1: lexicon matching, user overrides, the strict judge, the embedding
threshold's calibration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autolabel.audit.taxonomy import (
    EMBED_THRESHOLD,
    AuditError,
    category_similarity,
    default_embedder,
    lexicon_matches,
    load_taxonomy,
    parse_judge_reply,
)
from autolabel.errors import InputError

CALIBRATION_RELATED = [
    ("gender", "female pronouns and references to women"),
    ("gender", "words about mothers, wives and daughters"),
    ("race_ethnicity", "mentions of Black people and racial identity"),
    ("religion", "Islam, mosques and Muslim practice"),
    ("nationality", "immigrants and people from foreign countries"),
    ("age", "elderly people and retirement"),
    ("disability", "wheelchair users and physical disabilities"),
    ("sexual_orientation", "gay and lesbian relationships"),
    ("socioeconomic", "poverty and homeless people"),
    ("physical_appearance", "body weight and being overweight"),
]
CALIBRATION_UNRELATED = ["Python function definitions", "numbers in dates",
                         "closing parentheses in code", "weather forecasts and rain",
                         "football scores", "chemical element names", "past tense verbs",
                         "URLs and web addresses", "cooking recipes", "financial stock prices"]


def test_lexicon_word_boundaries_and_stoplist() -> None:
    tax = load_taxonomy()
    assert "gender" in lexicon_matches("mentions of women and mothers", tax)
    assert "race_ethnicity" in lexicon_matches("Black families in the census", tax)
    assert lexicon_matches("black coffee and white space in code", tax) == {}
    assert lexicon_matches("a race condition between threads", tax) == {}
    assert "gender" not in lexicon_matches("the word 'shell' and 'manual'", tax)


def test_user_taxonomy_overrides_and_extends(tmp_path: Path) -> None:
    user = tmp_path / "tax.json"
    user.write_text(json.dumps({"categories": {"caste": {
        "description": "Caste", "lexicon": ["dalit", "brahmin"]}}, "stoplist": ["dalit road"]}))
    tax = load_taxonomy(user)
    assert "caste" in tax.names() and "gender" in tax.names()
    assert "caste" in lexicon_matches("Dalit communities", tax)
    assert lexicon_matches("Dalit Road in the city", tax) == {}
    user.write_text("{not json")
    with pytest.raises(InputError, match="invalid JSON"):
        load_taxonomy(user)


def test_judge_reply_parsed_strictly() -> None:
    tax = load_taxonomy()
    ok = parse_judge_reply('{"category": "gender", "verdict": "related", "rationale": "x"}', tax)
    assert (ok.category, ok.verdict) == ("gender", "related")
    for bad in ["nope", '{"category": "gender"}',
                '{"category": "astrology", "verdict": "related", "rationale": "x"}']:
        with pytest.raises(AuditError):
            parse_judge_reply(bad, tax)


@pytest.mark.slow
def test_embedding_threshold_calibration() -> None:
    """The stated threshold separates clearly related from unrelated labels with MiniLM."""
    tax, embed = load_taxonomy(), default_embedder()
    sims = category_similarity([t for _, t in CALIBRATION_RELATED], tax, embed)
    own = [sims[i, tax.names().index(c)] for i, (c, _) in enumerate(CALIBRATION_RELATED)]
    assert min(own) >= EMBED_THRESHOLD
    assert category_similarity(CALIBRATION_UNRELATED, tax, embed).max() < EMBED_THRESHOLD
