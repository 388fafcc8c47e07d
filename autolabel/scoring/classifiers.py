"""Detection and fuzzing (Paulo et al. 2024): can an LLM that reads the explanation tell
activating held-out examples from random ones?

Both take the same held-out sequences as simulation and split them themselves: ``kind !=
"random"`` (top and quantile windows) are the activating examples, ``random`` windows the
negatives. The answer slots are read all at once from echo+logprobs when the client has them
(which also gives ROC-AUC), else parsed from a completion.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from autolabel.errors import LLMError
from autolabel.examples import TextExample
from autolabel.prompting import render, sanitize_token
from autolabel.scoring.metrics import balanced_accuracy, roc_auc
from autolabel.scoring.simulators import PLACEHOLDER, clean_explanation, tokens_at
from autolabel.scoring.types import (
    DEGENERATE,
    ERROR,
    OK,
    PARSE_ERROR,
    SanityReport,
    ScoreResult,
    SimulationParseError,
)
from autolabel.wording import canonical_explanation

if TYPE_CHECKING:
    from autolabel.llm import LLMClient

DETECTION_TEMPLATE = "simulate-detection.j2"
_ANSWER = re.compile(r"Example\s*(\d+)\s*:\s*([01])")
Answer = tuple[int, float | None]  # (guess 0/1, p(yes) when logprobs give it)


def _example_text(seq: TextExample, marks: set[int] | None) -> str:
    """A sequence as one line; ``marks``: token indices to highlight as ``<<tok>>``."""
    parts = []
    for i, tok in enumerate(seq.tokens):
        shown = sanitize_token(tok, max_chars=40)
        if marks is not None and i in marks:
            stripped = shown.lstrip()
            shown = shown[:len(shown) - len(stripped)] + f"<<{stripped}>>"
        parts.append(shown)
    return "".join(parts).strip()


def _p_yes(top: Mapping[str, float]) -> float | None:
    """p("1") renormalised over {"0", "1"} from a slot's top logprobs."""
    best = {d: max((lp for t, lp in top.items() if t.strip() == d), default=-math.inf)
            for d in ("0", "1")}
    if best["0"] == -math.inf and best["1"] == -math.inf:
        return None
    hi = max(best.values())
    e0, e1 = math.exp(best["0"] - hi), math.exp(best["1"] - hi)
    return e1 / (e0 + e1)


class DetectionScorer:
    """Paulo et al. (2024) detection: can the LLM tell activating held-out examples from
    random ones given the explanation? Balanced accuracy; ROC-AUC from the 0/1 answer
    logprobs where the client has echo+logprobs."""

    name = "detection"
    simulator = ""  # no simulator: the LLM classifies examples directly
    sanity: SanityReport | None = None
    fuzzing = False

    def __init__(self, client: LLMClient, *, batch: int = 5, seed: int = 0) -> None:
        self.client, self.batch, self.seed = client, batch, seed

    def _marks(self, seq: TextExample, activating: bool, rng: random.Random) -> set[int] | None:
        return None

    def score(self, explanation: str, sequences: Sequence[TextExample],
              scale: float) -> ScoreResult:
        """Balanced accuracy over activating (non-random) vs random ``sequences``; ``scale``
        is unused (the answers are yes/no), accepted for the common scorer interface."""
        activating = [s for s in sequences if s.kind != "random"]
        non_activating = [s for s in sequences if s.kind == "random"]
        rng = random.Random(self.seed)
        items = [(s, 1) for s in activating] + [(s, 0) for s in non_activating]
        rng.shuffle(items)
        texts = [_example_text(s, self._marks(s, y == 1, rng)) for s, y in items]
        text = canonical_explanation(explanation)  # wording cannot game the score (issue 13)
        labels, guesses, probs, errors, outages = [], [], [], [], []
        for start in range(0, len(items), self.batch):
            chunk = list(range(start, min(start + self.batch, len(items))))
            try:
                answers = self._ask(text, [texts[i] for i in chunk])
            except SimulationParseError as exc:  # a real reply that cannot be read
                errors.append(f"examples {chunk[0]}-{chunk[-1]}: {exc}")
                continue
            except LLMError as exc:  # an outage: the whole score is retried next run
                outages.append(f"examples {chunk[0]}-{chunk[-1]}: {exc}")
                continue
            for i, (guess, prob) in zip(chunk, answers, strict=True):
                labels.append(items[i][1])
                guesses.append(guess)
                probs.append(prob)
        if outages:
            return ScoreResult(self.name, self.simulator, None, ERROR, len(items),
                               {"error": outages[0], "errors": errors + outages})
        return self._result(labels, guesses, probs, errors, len(items))

    def _prompt(self, explanation: str, examples: list[str]) -> str:
        return render(DETECTION_TEMPLATE, explanation=clean_explanation(explanation),
                      examples=examples, fuzzing=self.fuzzing).rstrip() + "\n"

    def _ask(self, explanation: str, examples: list[str]) -> list[Answer]:
        """(guess, p(yes) or None) per example, from logprobs when available, else text."""
        prompt = self._prompt(explanation, examples)
        if self.client.capabilities().echo_logprobs:
            return self._ask_logprobs(prompt, len(examples))
        reply = self.client.complete(prompt, max_tokens=8 * len(examples), temperature=0.0)
        found = {int(n): int(v) for n, v in _ANSWER.findall(reply.text)}
        if set(range(1, len(examples) + 1)) - set(found):
            raise SimulationParseError(f"expected answers for {len(examples)} examples, got "
                                       f"{reply.text[:80]!r}")
        return [(found[n], None) for n in range(1, len(examples) + 1)]

    def _ask_logprobs(self, prompt: str, n: int) -> list[Answer]:
        """All-at-once: every answer slot is written as ``?`` and read from its top logprobs."""
        offsets, text = [], prompt
        for k in range(1, n + 1):
            text += f"Example {k}: "
            offsets.append(len(text))
            text += f"{PLACEHOLDER}\n"
        reply = self.client.prompt_logprobs(text, top_logprobs=20)
        out: list[Answer] = []
        for tok in tokens_at(reply.prompt_logprobs or [], text, offsets):
            p = _p_yes(tok.top if tok is not None else {})
            if p is None:
                raise SimulationParseError("neither 0 nor 1 among the answer's top logprobs; "
                                           "use a stronger model")
            out.append((int(p > 0.5), p))
        return out

    def _result(self, labels: list[int], guesses: list[int], probs: list[float | None],
                errors: list[str], n: int) -> ScoreResult:
        value = balanced_accuracy(labels, guesses)
        auc = roc_auc(labels, [p for p in probs if p is not None]) if probs and all(
            p is not None for p in probs) else None
        status = OK if value is not None else (PARSE_ERROR if errors else DEGENERATE)
        details = {"balanced_accuracy": value, "roc_auc": auc, "n_answered": len(labels),
                   "errors": errors, "labels": labels, "guesses": guesses}
        result = ScoreResult(self.name, self.simulator, value if status == OK else None,
                             status, n, details)
        result.truth = [np.array([y], dtype=np.float64) for y in labels]
        result.pred = [np.array([g], dtype=np.float64) for g in guesses]
        result.metric = "balanced_accuracy"
        return result


class FuzzingScorer(DetectionScorer):
    """Paulo et al. (2024) fuzzing: activating examples have their activating tokens marked
    ``<<tok>>``; non-activating ones have as many random tokens marked; does the LLM see
    which marking matches the explanation?"""

    name = "fuzzing"
    fuzzing = True

    def _marks(self, seq: TextExample, activating: bool, rng: random.Random) -> set[int] | None:
        hot = {i for i, a in enumerate(seq.activations) if a > 0}
        if activating and hot:
            return hot
        k = max(1, len(hot) or 1)
        return set(rng.sample(range(len(seq.tokens)), min(k, len(seq.tokens))))
