"""Bring your own pairs: the ``pairs:PATH`` CSV (spans from the texts' difference, bad rows
named by line, never a silent partial load)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autolabel.audit.pairs import NEUTRAL, load_pair_sets, load_user_pairs
from autolabel.audit.taxonomy import load_taxonomy
from autolabel.errors import InputError

CATEGORIES = load_taxonomy().names()


def _csv(tmp_path: Path, body: str, name: str = "mine.csv") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def test_user_pairs_with_spans_groups_and_direction(tmp_path: Path) -> None:
    path = _csv(tmp_path, (
        "text_a,text_b,category,group_a,group_b,direction\n"
        "The nurse said she was tired.,The nurse said he was tired.,gender,female,male,stereo\n"
        '"Poor people, they said, are lazy.","Rich people, they said, are lazy.",'
        "socioeconomic,,,\n"
        "The old man smiled.,The young man smiled.,age,,,anti\n"))
    pairs = load_user_pairs(path, CATEGORIES)
    assert [(p.term_a, p.term_b) for p in pairs] == [("she", "he"), ("Poor", "Rich"),
                                                     ("old", "young")]
    assert [p.direction for p in pairs] == ["stereo", None, "anti"]
    assert (pairs[0].group_a, pairs[0].group_b) == ("female", "male")
    assert (pairs[1].group_a, pairs[1].group_b) == ("poor", "rich")  # default: the terms
    assert [p.line for p in pairs] == [2, 3, 4]
    assert {p.source for p in pairs} == {"pairs:mine.csv"}


def test_spec_adds_the_neutral_control_and_provenance(tmp_path: Path) -> None:
    path = _csv(tmp_path, "text_a,text_b,category\nShe sang.,He sang.,gender\n")
    pairs, sources = load_pair_sets(f"pairs:{path}", CATEGORIES)
    assert any(p.category == NEUTRAL for p in pairs)
    assert sources[0].kind == "pairs" and sources[0].count == 1 and len(sources[0].sha256) == 64
    assert sources[0].licence.startswith("supplied by the user")


@pytest.mark.parametrize("body,match", [
    ("a,b,c\nx,y,gender\n", "line 1: a pairs CSV needs columns text_a, text_b, category"),
    ("text_a,text_b,category\nShe sang.,She sang.,gender\n", "line 2: text_a and text_b"),
    ("text_a,text_b,category\nShe sang.,He sang.,\n", "line 2: empty category"),
    ("text_a,text_b,category\nShe sang.,He sang.,gender\n,He sang.,gender\n",
     "line 3: empty text_a"),
    ("text_a,text_b,category\nShe sang.,He sang.,hair_colour\n",
     "line 2: unknown category 'hair_colour'"),
    ("text_a,text_b,category,direction\nShe sang.,He sang.,gender,up\n",
     "line 2: direction must be stereo, anti or empty"),
    ("text_a,text_b,category\nShe sang, loudly.,He sang.,gender\n", "line 2: more fields"),
    ("text_a,text_b,category\nShe sang.,She sang well.,gender\n", "line 2: text_a and text_b"),
    ("text_a,text_b,category\n", "has no pair rows"),
])
def test_bad_rows_are_one_line_errors_naming_the_line(tmp_path: Path, body: str,
                                                      match: str) -> None:
    path = _csv(tmp_path, body)
    with pytest.raises(InputError, match=match) as info:
        load_pair_sets(f"pairs:{path}", CATEGORIES)
    assert "\n" not in str(info.value)


def test_every_bad_row_is_counted_not_just_the_first(tmp_path: Path) -> None:
    rows = "".join("She sang.,She sang.,gender\n" for _ in range(5))
    path = _csv(tmp_path, "text_a,text_b,category\n" + "She sang.,He sang.,gender\n" + rows)
    with pytest.raises(InputError, match=r"5 bad row\(s\): line 3: .*line 5: .*\(\+2 more\)"):
        load_user_pairs(path, CATEGORIES)


def test_rows_are_named_by_their_first_line(tmp_path: Path) -> None:
    """A quoted text may span lines: a row is named by the line it starts on."""
    path = _csv(tmp_path, 'text_a,text_b,category\n"She sang\nloudly.","He sang\nloudly.",'
                          'gender\n\n"Same\nthing.","Same\nthing.",gender\n')
    with pytest.raises(InputError, match="1 bad row.*: line 6:"):
        load_user_pairs(path, CATEGORIES)


README = Path(__file__).resolve().parents[2] / "README.md"
WINOGENDER = [("technician.customer.1", "The technician told the customer that {} could pay "
               "with cash."), ("nurse.patient.0", "The nurse notified the patient that {} shift "
                               "would be ending in an hour.")]


def _readme_winogender_snippet() -> str:
    """The README's WinoGender conversion code block."""
    text = README.read_text(encoding="utf-8")
    after = text[text.index("To turn WinoGender into this format"):]
    return after[after.index("```python") + len("```python"):after.index("```\n", 10)]


def test_readme_winogender_recipe_gives_a_loadable_pairs_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented conversion, run on files in WinoGender's own format, loads as pairs:PATH
    with female/male groups and the occupation-majority direction."""
    words = {"male": ("he", "his"), "female": ("she", "her"), "neutral": ("they", "their")}
    lines = ["sentid\tsentence"]
    for sentid, template in WINOGENDER:
        for gender, (subj, poss) in words.items():
            word = poss if "shift" in template else subj
            lines.append(f"{sentid}.{gender}.txt\t{template.format(word)}")
    (tmp_path / "all_sentences.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "occupations-stats.tsv").write_text(
        "occupation\tbergsma_pct_female\tbls_pct_female\tbls_year\n"
        "technician\t40.0\t35.0\t2015\nnurse\t90.0\t90.0\t2015\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    exec(compile(_readme_winogender_snippet(), "README.md", "exec"), {})  # noqa: S102
    pairs, sources = load_pair_sets(f"pairs:{tmp_path / 'winogender_pairs.csv'}", CATEGORIES)
    mine = [p for p in pairs if p.source == "pairs:winogender_pairs.csv"]
    assert [(p.term_a, p.term_b, p.direction) for p in mine] == [("she", "he", "anti"),
                                                                 ("her", "his", "stereo")]
    assert {(p.group_a, p.group_b) for p in mine} == {("female", "male")}
    assert sources[0].count == 2
