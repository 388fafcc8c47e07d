"""Detection and fuzzing: balanced accuracy from scripted replies, parse errors as statuses,
fuzzing's marks, ROC-AUC from answer logprobs; both split activating from random themselves."""

from __future__ import annotations

import re

import pytest

from autolabel.examples import TextExample
from autolabel.llm import Completion, FakeClient, TokenLogprob
from autolabel.scoring.classifiers import DetectionScorer, FuzzingScorer
from tests.scoring.fakes import CHAT_ONLY

ACTIVE = [TextExample(["In", " March", " we"], [0.0, 1.0, 0.0], f"a{i}", "top")
          for i in range(5)]
QUIET = [TextExample(["the", " dog", " ran"], [0.0, 0.0, 0.0], f"q{i}", "random")
         for i in range(5)]


class RuleReader(FakeClient):
    """Answers each numbered example 1 when it mentions March (optionally: as marked text)."""

    def __init__(self, marked: bool = False) -> None:
        super().__init__("reader", capabilities=CHAT_ONLY)
        self.marked = marked

    def complete(self, prompt: str, **kw: object) -> Completion:  # type: ignore[override]
        self.prompts.append(prompt)
        needle = "<<March>>" if self.marked else "March"
        lines = re.findall(r"^Example (\d+): (.*)$", prompt, re.M)
        reply = "\n".join(f"Example {n}: {int(needle in text)}" for n, text in lines)
        return Completion(reply, 0, 0, 0.0, 0.0)


def test_detection_balanced_accuracy_from_scripted_replies() -> None:
    perfect = DetectionScorer(RuleReader()).score("names of months", ACTIVE + QUIET, 1.0)
    assert (perfect.value, perfect.status, perfect.simulator) == (1.0, "ok", "")
    assert perfect.details["roc_auc"] is None  # no logprobs from a chat-only client
    client = FakeClient("yes-man", capabilities=CHAT_ONLY)
    client.enqueue(*["\n".join(f"Example {k}: 1" for k in range(1, 6))] * 2)
    always = DetectionScorer(client).score("names of months", ACTIVE + QUIET, 1.0)
    assert always.value == pytest.approx(0.5) and len(client.prompts) == 2


def test_detection_unparseable_reply_is_parse_error() -> None:
    client = FakeClient("mumbler", capabilities=CHAT_ONLY, default="I think so")
    result = DetectionScorer(client).score("names of months", ACTIVE + QUIET, 1.0)
    assert result.status == "parse_error" and result.value is None
    assert len(result.details["errors"]) == 2


def test_fuzzing_marks_activating_tokens() -> None:
    reader = RuleReader(marked=True)
    result = FuzzingScorer(reader).score("names of months", ACTIVE + QUIET, 1.0)
    assert result.value == 1.0 and result.scorer == "fuzzing"
    assert "In <<March>> we" in "\n".join(reader.prompts)
    assert all("<<" in line for p in reader.prompts
               for line in re.findall(r"^Example \d+: .*$", p, re.M))


def test_detection_auc_from_logprobs() -> None:
    def table(prompt: str) -> list[TokenLogprob]:
        words = re.findall(r"\s*\S+", prompt)
        answers = iter("March" in line for line in re.findall(r"^Example \d+: (.+)$", prompt,
                                                                re.M)[:5])
        out = []
        for i, w in enumerate(words):
            top = {w: -1.0}
            if w == " ?":
                yes = next(answers)
                top = {"1": -0.2 if yes else -2.0, "0": -2.0 if yes else -0.2}
            out.append(TokenLogprob(w, None if i == 0 else -1.0, top))
        return out

    scorer = DetectionScorer(FakeClient("lp", logprob_table=table))
    result = scorer.score("months", ACTIVE + QUIET, 1.0)
    assert result.value == 1.0 and result.details["roc_auc"] == 1.0


def test_the_split_is_by_kind_whatever_the_order() -> None:
    """Quantile windows count as activating; mixing the order changes nothing."""
    quantile = [TextExample(s.tokens, s.activations, s.document_id, "quantile") for s in ACTIVE]
    mixed = [x for pair in zip(QUIET, quantile, strict=True) for x in pair]
    result = DetectionScorer(RuleReader()).score("names of months", mixed, 1.0)
    assert result.value == 1.0 and sorted(result.details["labels"]) == [0] * 5 + [1] * 5
    assert (DetectionScorer.name, DetectionScorer.simulator, FuzzingScorer.simulator) == (
        "detection", "", "")
