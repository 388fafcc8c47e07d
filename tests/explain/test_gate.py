"""The quality gate on issue 13's fixtures (what the offline default really stored), the
cleaning of what real servers send, and labels that must pass."""

from __future__ import annotations

import pytest

from autolabel.explain import GateConfig, judge_reply, judge_text, prompt_facts
from autolabel.prompting import FAMILIES, render_prompt
from autolabel.resources import prompts_dir

BILLS = (prompts_dir() / "explain_completion.j2").read_text()  # what the model saw then
MONTHS = [(["We", " met", " in", " May"], [0.0, 0.0, 0.0, 4.0])]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        # 8 copied a few-shot explanation of the prompt
        (' Python code such as "def" and "return"', "copy"),
        (' negation words such as "not" and "n\'t"', "copy"),
        (' 10 Python code such as "def" and "return"', "copy"),
        # 7 talked about the prompt instead of the feature
        (" the same token as the previous feature", "prompt_reference"),
        (" the same token as the feature 10", "prompt_reference"),
        (" the same token as the feature 1.", "prompt_reference"),
        (" the following tokens:", "prompt_reference"),
        (" the token 10 (strongest)", "prompt_reference"),
        # 4 were generation loops
        (' the 2nd letter of the word "with" in the word "with" in the word "with" in the',
         "loop"),
        (" the 0th month of the month of the month of the month of the", "loop"),
        (' the Hebrew word for "the","the","the","the","the","the",', "loop"),
        (" the token of the token of the token of the token of the token of the token of",
         "loop"),
        (" the 4th month of the month of the year of the year of the year of the year", "loop"),
        # degenerate: nothing that says anything
        (" the", "empty"),
        (" the 0th", "empty"),
        (" the word 9", "empty"),
        (" the same token as the", "empty"),
    ],
)
def test_issue_fixtures_are_rejected_with_their_reason(raw: str, reason: str) -> None:
    verdict = judge_reply(raw, BILLS)
    assert (verdict.status, verdict.reason) == ("rejected", reason), verdict
    assert verdict.text is None and verdict.error and verdict.error.startswith(reason)


@pytest.mark.parametrize(
    "raw",
    [" the word \"cooperate\"", " the atomic number of the element.", " the Hebrew alphabet",
     " the word \"love\"", " the 10th of the month", ' the word "at"', ' the digit "4"',
     " words about courts and judges", " month names, especially in dates",
     ' the word "feature"', " tokens after an opening bracket"],
)
def test_real_labels_pass(raw: str) -> None:
    assert judge_reply(raw, BILLS).status == "ok"


def test_copy_stands_when_the_feature_itself_supports_it() -> None:
    """A copied example is only garbage when the feature's data does not show its tokens."""
    negation = [(["I", " did", " not", " go"], [0.0, 0.0, 4.0, 0.0])]
    for fam in FAMILIES.values():
        for variant in ("completion", "chat"):
            copy = " negations such as \"not\" and \"never\""
            if fam.name == "bills":
                copy = " negation words such as \"not\" and \"n't\""
            assert judge_reply(copy, render_prompt(fam, variant, negation)).status == "ok"
            verdict = judge_reply(copy, render_prompt(fam, variant, MONTHS))
            assert (verdict.status, verdict.reason) == ("rejected", "copy"), (fam, variant)


def test_prompt_facts_read_examples_and_data_of_every_template() -> None:
    for fam in FAMILIES.values():
        for variant in ("completion", "chat"):
            facts = prompt_facts(render_prompt(fam, variant, MONTHS))
            assert len(facts.examples) >= 2, (fam, variant)
            assert not any(e == "fires on" or not e for e in facts.examples)
            assert facts.evidence == {"may"}, (fam, variant, facts.evidence)
    assert prompt_facts(None).examples == ()


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        ("month names", "month names"),
        (" Explanation: month names, especially in dates.", "month names, especially in dates"),
        ('"negation words such as not"', "negation words such as not"),
        (' "not" and "n\'t"', '"not" and "n\'t"'),
        (' the name of the month such as "April" and "November"',
         'the name of the month such as "April" and "November"'),
        ("The feature fires on closing brackets in code. It also likes commas.",
         "closing brackets in code"),
        ("**Explanation:** e.g. the word \"Paris\" in travel text.",
         'e.g. the word "Paris" in travel text'),
        ("Explanation:\nyears such as 1990", "years such as 1990"),
        ("the main thing this neuron does is find numbers", "numbers"),
        ("<think>The marked tokens are all months.\nSo months.</think>\nmonth names",
         "month names"),
        ("<think>cut off by the token limit", None),
        ("<|channel|>analysis<|message|>look at <<May>><|end|><|start|>assistant"
         "<|channel|>final<|message|>calendar months", "calendar months"),
        ("Let me think step by step.\nThe tokens are dates.\nFinal answer: dates", "dates"),
        ("```\nweekday names\n```", "weekday names"),
        ("- colour words", "colour words"),
        ("Description: the marked tokens are colour words", "colour words"),
        ("the word <<May>>", 'the word "May"'),
        (" May\t10\nmonth names", "month names"),
        ("We met on <<3 May>> at home and then we left.\nmonth names", "month names"),
        ('"May" (10), "3" (1)\nmonth names', "month names"),
    ],
)
def test_cleaning_what_servers_send(reply: str, text: str | None) -> None:
    verdict = judge_reply(reply)
    assert verdict.text == text, verdict
    assert verdict.status == ("ok" if text else "rejected")


@pytest.mark.parametrize(
    ("reply", "status", "reason"),
    [
        ("", "rejected", "empty"),
        ("   \n  ", "rejected", "empty"),
        ("...", "rejected", "empty"),
        ('""', "rejected", "empty"),
        ("x" * 301, "rejected", "too_long"),
        ("month names\nAlso days\nAnd years", "parse_error", None),
        (" May\t10\n June\t8", "rejected", "echo"),
        ("<start>\nfoo\t0\n<end>", "rejected", "echo"),
        ('"May" (10), "June" (9)', "rejected", "echo"),
        ("I cannot help with that request.", "refused", None),
        ("As an AI language model, I don't have opinions.", "refused", None),
        ("I'm sorry, but I can't explain this.", "refused", None),
        ("<think>hmm</think> I cannot do this", "refused", None),
    ],
)
def test_statuses_and_reasons(reply: str, status: str, reason: str | None) -> None:
    verdict = judge_reply(reply)
    assert (verdict.status, verdict.reason) == (status, reason)
    assert verdict.text is None and verdict.error


def test_length_limits_are_configurable() -> None:
    text = "words about courts, judges, trials, lawyers and the legal system in general"
    assert judge_text(text).status == "ok"
    tight = judge_text(text, config=GateConfig(max_chars=40))
    assert (tight.status, tight.reason) == ("rejected", "too_long")
    assert judge_text(text, config=GateConfig(max_words=5)).reason == "too_long"


def test_rules_are_general_not_a_list_of_strings() -> None:
    """Variants the fixtures do not contain are caught by the same rules."""
    cases = {"like neuron #4 above": "prompt_reference",
             "the tokens listed in excerpt 2": "prompt_reference",
             "similar to the other features": "prompt_reference",
             "words with activation 7": "prompt_reference",
             "colour colour colour colour": "loop",
             "the name of the name of the name of the": "loop",
             'sports such as "football" and': "incomplete"}
    for text, reason in cases.items():
        assert judge_text(text).reason == reason, text


def test_borrowing_an_examples_quoted_tokens_is_a_copy() -> None:
    """Fixtures from bench_explain's planted rules (pairs template): the few-shot answer's
    tokens on features that never show them are copies; the feature's own tokens are not."""
    brackets = [(["(", "a", ")", " and", " (", "b", ")"], [0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 4.0])]
    negation = [(["I", " did", " not", " go"], [0.0, 0.0, 4.0, 0.0])]
    for fam in FAMILIES.values():
        shot = '"not" and "n\'t"' if fam.name == "bills" else '"not" and "never"'
        for reply in (f" {shot}", f" negative words such as {shot}"):
            verdict = judge_reply(reply, render_prompt(fam, "completion", brackets))
            assert (verdict.status, verdict.reason) == ("rejected", "copy"), (fam, reply)
            assert judge_reply(reply, render_prompt(fam, "completion", negation)).status == "ok"
        assert judge_reply(' "(" and ")"', render_prompt(fam, "completion", brackets)).status \
            == "ok"
