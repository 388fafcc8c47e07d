"""The token-statistics baseline: what it picks, and labels worded as a person would."""

from __future__ import annotations

import random

import pytest

from autolabel.examples import TextExample
from autolabel.explain import (
    GATE_VERSION,
    Candidate,
    TokenStatsExplainer,
    judge_text,
    readable_label,
)

MONTHS = [" January", " March", " May", " July", " October"]


def _months_feature(seed: int = 0) -> tuple[list[TextExample], dict[str, float]]:
    """Months fire (after " in"); filler words are common in the background."""
    rng = random.Random(seed)
    filler = [" the", " we", " went", " to", " a", " park", ",", ".", " and", " it"]
    examples = []
    for i in range(12):
        words = [rng.choice(filler) for _ in range(10)]
        pos = rng.randrange(1, 9)
        words[pos - 1], words[pos] = " in", MONTHS[i % len(MONTHS)]
        acts = [0.0] * 10
        acts[pos] = 2.0 + rng.random() * 3
        acts[(pos + 3) % 10] = 0.1 if words[(pos + 3) % 10] == " the" else 0.0
        examples.append(TextExample(words, acts, f"doc{i}"))
    background = {t: 1000.0 for t in filler} | {" in": 800.0} | {m: 5.0 for m in MONTHS}
    return examples, background


def test_token_stats_names_month_tokens() -> None:
    examples, background = _months_feature()
    cand = TokenStatsExplainer().explain(examples, background)
    assert cand.status == "ok" and cand.text is not None
    named = [m for m in MONTHS if f'"{m.strip()}"' in cand.text]
    assert len(named) == 3
    assert cand.text.startswith("the words ") and cand.text.endswith(' after "in"')
    assert '"the"' not in cand.text
    assert (cand.explainer, cand.llm_model, cand.call_id) == ("tokens", "", None)
    assert len(cand.prompt_hash) == 64 and cand.gate_version == GATE_VERSION


def test_token_stats_is_deterministic_and_handles_silence() -> None:
    examples, background = _months_feature()
    runs = {TokenStatsExplainer().explain(examples, background).text for _ in range(3)}
    shuffled = list(reversed(examples))
    runs.add(TokenStatsExplainer().explain(shuffled, background).text)
    assert len(runs) == 1
    dead = [TextExample(["a"], [0.0], "d")]
    cand = TokenStatsExplainer().explain(dead, background)
    assert cand.status == "error" and cand.text is None and cand.error
    assert TokenStatsExplainer().explain(examples, {}).status == "ok"


def test_candidates_are_plain_dataclasses() -> None:
    cand = TokenStatsExplainer().explain(*_months_feature())
    assert isinstance(cand, Candidate) and cand.settings["algorithm"] == "token-stats/2"


@pytest.mark.parametrize(
    ("tokens", "prev", "share", "label"),
    [
        # issue 13's fixtures: instead of `tokens " among", " Among", "Among"` …
        ([" among", " Among", "Among"], None, 0.0, 'the word "among" (any case)'),
        ([" concerned", " concern", " concerns"], None, 0.0,
         'the words "concern", "concerned", "concerns"'),
        (["4"], "1", 0.8, 'the token "4" after "1"'),
        (["4", "2"], "1", 0.4, 'the tokens "4", "2" (often after "1")'),
        ([" love", "love", "Love"], None, 0.0, 'the word "love" (any case)'),
        ([" James", "James", "usk"], None, 0.0, 'the tokens "James", "usk"'),
        ([" gold", " bronze", " metal"], None, 0.0, 'the words "gold", "bronze", "metal"'),
        ([" imposed"], "<bos>", 0.7, 'the word "imposed" at the start of a text'),
        (["\n\n", "."], None, 0.0, 'the tokens "\\n\\n", "."'),
        ([' "', ")."], None, 0.0, 'the tokens "\\"", ")."'),
    ],
)
def test_readable_labels(tokens: list[str], prev: str | None, share: float,
                         label: str) -> None:
    assert readable_label(tokens, prev, share) == label
    assert judge_text(label).status == "ok"  # the gate accepts every baseline wording
