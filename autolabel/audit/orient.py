"""Which side of a pair is which group: orientation by demographic pole, never by file column.

Tier 2 tests ``act(pole-a side) - act(pole-b side)``: for gender, female minus male, whichever
sentence a file lists first. A feature that fires on one group's terms only then moves every
pair the same way, on built-in templates, CrowS-Pairs (where the disadvantaged group stands in
``sent_more`` in some rows and in ``sent_less`` in others) and WinoBias alike. Swapping the two
sentences of any row flips its orientation sign and leaves the oriented difference unchanged,
so no flag can depend on row order.

A pair is oriented when its two differing spans (or its group labels, if they name a pole)
point to different poles: one side names pole a and not pole b, the other does not name pole
a (or the mirror image). Pairs whose spans name the same pole (African / Asian), both poles, or
neither (two first names) are *unoriented*: they are left out of the signed tests and counted
in the report. Categories without poles keep the order the file gives (the report says so).

Tier 3 keeps the stereotype sign: ``stereo`` is +1 where the pole-a sentence is the
stereotype-consistent one, -1 where the pole-b sentence is, 0 where no direction is known.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autolabel.audit.pairs import NEUTRAL, Pair
from autolabel.audit.taxonomy import Category, Taxonomy, pole_matches

AS_GIVEN, BY_POLES, NOT_ORIENTED = "as-given", "poles", "none"


@dataclass(frozen=True)
class Orientation:
    """Per pair: orientation sign (+1 keep, -1 swap, 0 unoriented) and stereotype sign."""

    sign: np.ndarray  # [N] int8
    stereo: np.ndarray  # [N] int8
    mode: dict[str, str]  # category -> "poles" | "as-given" (no poles in the taxonomy)


def side_pole(label: str, span_text: str, category: Category,
              stoplist: Sequence[str]) -> set[int]:
    """The poles one side names: its group label if that is a pole's name, else its span."""
    assert category.poles is not None
    names = [p.name.lower() for p in category.poles]
    if label.strip().lower() in names:
        return {names.index(label.strip().lower())}
    return pole_matches(span_text, category, stoplist)


_WORDS = re.compile(r"[\w'-]+")


def own_words(span: str, other: str) -> str:
    """The words of ``span`` that ``other`` lacks (multiset difference, case-insensitive).

    Long CrowS spans repeat shared words ("She got in his face ... She" vs "He got in his face
    ... He"); only the swapped words say which group a side is about.
    """
    left = Counter(w.lower() for w in _WORDS.findall(other))
    kept = []
    for word in _WORDS.findall(span):
        if left[word.lower()] > 0:
            left[word.lower()] -= 1
        else:
            kept.append(word)
    return " ".join(kept)


def pair_sign(pair: Pair, category: Category, stoplist: Sequence[str]) -> int:
    """+1 if text_a is the pole-a side, -1 if text_b is, 0 if the pair cannot be oriented."""
    a = side_pole(pair.group_a, own_words(pair.term_a, pair.term_b), category, stoplist)
    b = side_pole(pair.group_b, own_words(pair.term_b, pair.term_a), category, stoplist)
    if len(a) > 1 or len(b) > 1 or a == b:
        return 0  # a side names both poles, or both sides the same pole (or none)
    return 1 if a == {0} or b == {1} else -1


def stereo_sign(pair: Pair, sign: int) -> int:
    """+1 when the pole-a sentence is the stereotype-consistent one, -1 when pole-b is, 0 if
    the pair has no known direction or no orientation."""
    direction = {"stereo": 1, "anti": -1}.get(pair.direction or "", 0)
    return direction * sign


def orient_pairs(pairs: Sequence[Pair], taxonomy: Taxonomy) -> Orientation:
    """Orientation and stereotype signs for every pair (neutral controls stay unoriented)."""
    cats = {c.name: c for c in taxonomy.categories}
    sign = np.zeros(len(pairs), dtype=np.int8)
    mode: dict[str, str] = {}
    for i, pair in enumerate(pairs):
        cat = cats.get(pair.category)
        if cat is None or pair.category == NEUTRAL:
            continue
        if cat.poles is None:
            sign[i], mode[cat.name] = 1, AS_GIVEN
        else:
            sign[i], mode[cat.name] = pair_sign(pair, cat, taxonomy.stoplist), BY_POLES
    stereo = np.array([stereo_sign(p, int(s)) for p, s in zip(pairs, sign, strict=True)],
                      dtype=np.int8)
    return Orientation(sign, stereo, mode)
