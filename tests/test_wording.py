"""The one canonical wording every scorer sees (issue 13.3): loops and repeats collapse, padding
with words already said goes, ordinary labels pass through unchanged."""

from __future__ import annotations

import pytest

from autolabel.wording import canonical_explanation, find_loops, tokens

# The issue's generation loops (default:5 and friends), as the local Gemma wrote them.
MONTH_LOOP = ("the 0th month of the month of the month of the month of the month of the month "
              "of the month of the month")
LOOPS = [
    MONTH_LOOP,
    'the 2nd letter of the word "with" in the word "with" in the word "with" in the word '
    '"with" in the word "with"',
    'the Hebrew word for "the","the","the","the","the","the","the","the"',
]
TOKEN_LABEL = 'tokens " among", " Among", "Among"'
ORDINARY = [
    TOKEN_LABEL,
    'the word "among" (any case)',
    'the words "concern", "concerned", "concerns"',
    'the token "4" after "1"',
    'Python code such as "def" and "return"',
    "negation words such as \"not\" and \"n't\"",
    "the first word of a sentence or the start of a line",
    "months of the year, especially in dates",
    "a 5\" screen and a 6\" one",
    "numbers between 1 and 10, e.g. 3, 4 or 7",
]


@pytest.mark.parametrize("label", ORDINARY)
def test_ordinary_labels_pass_through_unchanged(label: str) -> None:
    assert canonical_explanation(label) == label
    assert find_loops(label, min_repeats=3) == []


@pytest.mark.parametrize("label", ORDINARY)
def test_a_label_repeated_is_the_label(label: str) -> None:
    assert canonical_explanation(" ".join([label] * 2)) == label
    assert canonical_explanation(" ".join([label] * 5)) == label


def test_each_word_repeated_is_the_label() -> None:
    assert canonical_explanation('the the word word "among" "among" (any any case case)') == \
        'the word "among" (any case)'


@pytest.mark.parametrize("pad", ["among Among", '" among" " Among" "Among"', "Among"])
def test_padding_with_top_tokens_in_a_loop_is_the_label(pad: str) -> None:
    for copies in ((2, 3, 10) if " " in pad else (3, 10)):  # one word twice is not a loop
        padded = f"{TOKEN_LABEL} " + " ".join([pad] * copies)
        assert canonical_explanation(padded) == TOKEN_LABEL, padded


def test_loops_collapse_whatever_their_length() -> None:
    forms = {canonical_explanation("the 0th month" + " of the month" * n) for n in (2, 3, 9)}
    assert forms == {"the 0th month of the month"} == {canonical_explanation(MONTH_LOOP)}
    assert canonical_explanation('the Hebrew word for "the","the","the"') == \
        'the Hebrew word for "the"'


@pytest.mark.parametrize("loop", LOOPS)
def test_find_loops_sees_the_issues_loops(loop: str) -> None:
    found = find_loops(loop, min_repeats=3)
    assert found and found[0].repeats >= 3
    assert len(canonical_explanation(loop)) < len(loop) / 2


def test_truncated_loop_copy_is_dropped() -> None:
    # cut off mid-copy by the token limit: the partial copy does not survive
    assert canonical_explanation("dogs and cats and cats and cats and ca") == "dogs and cats"


def test_whitespace_is_normalised_and_quotes_are_literals() -> None:
    assert canonical_explanation("  the   word\n among ") == "the word among"
    assert [t.text for t in tokens('the " Among" token')] == ["the", '" Among"', "token"]


def test_find_loops_sees_a_long_unit_made_of_short_repeats() -> None:
    found = find_loops("x a a b a a b a a b y", min_repeats=3)
    assert [(loop.unit, loop.repeats) for loop in found] == [("a a b", 3)]


def test_doubled_words_of_a_loop_collapse_like_the_loop() -> None:
    doubled = " ".join(w for word in MONTH_LOOP.split() for w in (word, word))
    assert canonical_explanation(doubled) == canonical_explanation(MONTH_LOOP)
