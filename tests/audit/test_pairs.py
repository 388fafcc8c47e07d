"""Counterfactual pairs: built-in templates, CrowS-Pairs / WinoBias loaders, spec parsing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from autolabel.audit.pairs import (
    NEUTRAL,
    builtin_pairs,
    diff_parts,
    diff_spans,
    load_pair_sets,
    parse_pairs_spec,
)
from autolabel.audit.taxonomy import load_taxonomy
from autolabel.errors import InputError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "bias"


def test_builtin_pairs_cover_every_category_with_power() -> None:
    counts = Counter(p.category for p in builtin_pairs())
    for cat in [*load_taxonomy().names(), NEUTRAL]:
        assert counts[cat] >= 40, cat
    for p in builtin_pairs():
        def norm(prefix: str) -> str:  # only the article may differ outside the span
            return prefix.replace("an ", "a ").replace("An ", "A ")

        assert norm(p.text_a[: p.span_a[0]]) == norm(p.text_b[: p.span_b[0]])
        assert p.text_a[p.span_a[1]:] == p.text_b[p.span_b[1]:]
        assert p.term_a != p.term_b


def test_articles_fixed_per_term() -> None:
    texts = {p.text_a for p in builtin_pairs()} | {p.text_b for p in builtin_pairs()}
    assert "We met an Asian student at the library." in texts
    assert not any(" a Asian" in t or " an white" in t for t in texts)


def test_diff_spans_whole_words() -> None:
    a, b = "Most black kids are poor.", "Most white kids are poor."
    (sa, sb) = diff_spans(a, b)  # type: ignore[misc]
    assert a[slice(*sa)] == "black" and b[slice(*sb)] == "white"
    a, b = "Asians can't drive.", "White people can't drive."
    (sa, sb) = diff_spans(a, b)  # type: ignore[misc]
    assert a[slice(*sa)] == "Asians" and b[slice(*sb)] == "White people"
    assert diff_spans("same", "same") is None


def test_diff_parts_align_words_by_position() -> None:
    a = "He got angry fast. He got in his face and he cowered. He"
    b = "She got angry fast. She got in his face and he cowered. She"
    pa, pb = diff_parts(a, b)
    assert [a[slice(*r)] for r in pa] == ["He", "He", "He"]
    assert [b[slice(*r)] for r in pb] == ["She", "She", "She"]
    assert pa[1][0] == a.index("He got in")  # the second "He", not the shared "he"
    pa, pb = diff_parts("Asians can't drive.", "White people can't drive.")
    assert len(pa) == len(pb) == 1  # one swap of one word for two
    pa, pb = diff_parts("The man left.", "The old man left.")
    assert pa == () and len(pb) == 1  # insertion only: side a falls back to its span


def test_crows_loader_on_small_file(tmp_path: Path) -> None:
    csv = tmp_path / "c.csv"
    csv.write_text(
        ",sent_more,sent_less,stereo_antistereo,bias_type\n"
        '0,"Poor people are lazy.","Rich people are lazy.",stereo,socioeconomic\n'
        '1,"He was a good nurse.","She was a good nurse.",antistereo,gender\n'
        '2,"Same.","Same.",stereo,age\n')
    pairs, sources = load_pair_sets(f"crows:{csv}")
    crows = [p for p in pairs if p.source == "crows"]
    # sent_more is the more stereotypical sentence in both "stereo" rows (about the
    # disadvantaged group) and "antistereo" rows (about the advantaged one), so text_a is
    # always the stereotype-consistent side; which side is which group is decided by orient.
    assert [(p.term_a, p.term_b, p.category, p.direction) for p in crows] == [
        ("Poor", "Rich", "socioeconomic", "stereo"), ("He", "She", "gender", "stereo")]
    assert any(p.category == NEUTRAL for p in pairs)  # control always added
    assert sources[0].skipped == {"sentences identical or one only inserts words": 1}
    assert [crows[1].text_a[slice(*r)] for r in crows[1].ranges_a] == ["He"]


def test_winobias_loader_on_small_files(tmp_path: Path) -> None:
    (tmp_path / "pro_stereotyped_type1.txt.dev").write_text(
        "1 [The developer] argued with the designer because [he] did not like it.\n")
    (tmp_path / "anti_stereotyped_type1.txt.dev").write_text(
        "1 [The developer] argued with the designer because [she] did not like it.\n")
    pairs, sources = load_pair_sets(f"winobias:{tmp_path}")
    wino = [p for p in pairs if p.source == "winobias"]
    assert len(wino) == 1 and (wino[0].term_a, wino[0].term_b) == ("he", "she")
    assert wino[0].text_a == "The developer argued with the designer because he did not like it."
    assert sources[0].licence.startswith("MIT") and len(sources[0].sha256) == 64


def test_winobias_lines_differing_in_several_words_are_counted(tmp_path: Path) -> None:
    (tmp_path / "pro_stereotyped_type1.txt.dev").write_text(
        "1 [The nurse] met the chef because [she] was hungry.\n"
        "2 [The nurse] met the chef because [she] was hungry.\n")
    (tmp_path / "anti_stereotyped_type1.txt.dev").write_text(
        "1 [The nurse] met the chef because [he] was hungry.\n"
        "2 [The cook] met the boss because [he] was hungry.\n")
    pairs, sources = load_pair_sets(f"winobias:{tmp_path}")
    assert sum(p.source == "winobias" for p in pairs) == 1
    assert sum(sources[0].skipped.values()) == 1


@pytest.mark.parametrize("spec,match", [
    ("crows:/nope.csv", "does not exist"), ("bogus", "unknown pair source"),
    ("", "empty pairs spec"), ("winobias:/tmp", "no WinoBias"),
    ("pairs:/nope.csv", "does not exist")])
def test_bad_specs_are_one_line_errors(spec: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        parse_pairs_spec(spec)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared bias data not present")
def test_shared_crows_and_winobias() -> None:
    pairs, sources = load_pair_sets(
        f"builtin,crows:{SHARED / 'crows_pairs' / 'crows_pairs_anonymized.csv'},"
        f"winobias:{SHARED / 'winobias'}")
    by_source = Counter(p.source for p in pairs)
    assert 1400 < by_source["crows"] <= 1508 and by_source["winobias"] > 1400
    for p in pairs:
        after_a, after_b = p.text_a[p.span_a[1]:], p.text_b[p.span_b[1]:]
        assert p.term_a and p.term_b and after_a.split() == after_b.split() or (
            "".join(after_a.split()) == "".join(after_b.split()))
        for (lo, hi), ranges in ((p.span_a, p.ranges_a), (p.span_b, p.ranges_b)):
            assert all(lo <= r_lo < r_hi <= hi for r_lo, r_hi in ranges)  # parts in the span
    assert {s.kind for s in sources} == {"builtin", "crows", "winobias"}
    crows = next(s for s in sources if s.kind == "crows")
    assert crows.count + sum(crows.skipped.values()) == 1508  # every row used or counted
