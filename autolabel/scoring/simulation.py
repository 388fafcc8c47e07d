"""Simulation scoring (Bills et al. 2023): how well could a reader who only had the explanation
predict the feature's activation on every held-out token?

A :class:`~autolabel.scoring.types.Simulator` predicts; the score is the Pearson r between
predictions and true activations pooled over all scored tokens (test top + quantile + random).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from autolabel.errors import LLMError
from autolabel.examples import TextExample
from autolabel.scoring.metrics import normalise_truth, pooled_pearson
from autolabel.scoring.types import (
    DEGENERATE,
    ERROR,
    OK,
    PARSE_ERROR,
    SanityReport,
    ScoreResult,
    SimulationParseError,
    Simulator,
)
from autolabel.wording import canonical_explanation


class SimulationScorer:
    """Score = pooled Pearson r between simulated and true activations on held-out tokens.

    ``backend`` is the simulator object; ``simulator`` its name (the scorer's identity with
    ``name``); ``sanity`` the report that chose it, when one was consulted.
    """

    name = "simulation"

    def __init__(self, simulator: Simulator, *, sanity: SanityReport | None = None) -> None:
        self.backend = simulator
        self.sanity = sanity

    @property
    def simulator(self) -> str:
        """The simulator's name, e.g. ``llm-logprob:gemma-3-270m`` or ``embedding:…``."""
        return self.backend.name

    def score(self, explanation: str, sequences: Sequence[TextExample],
              scale: float) -> ScoreResult:
        """``scale``: the feature's max activation over its *train* examples."""
        seqs = [s for s in sequences if s.tokens]
        text = canonical_explanation(explanation)  # wording cannot game the score (issue 13)
        before = self._spent()
        try:
            preds = self.backend.predict(text, [s.tokens for s in seqs])
        except SimulationParseError as exc:  # a real reply that cannot be read
            return self._result(None, PARSE_ERROR, seqs, {"error": str(exc)})
        except LLMError as exc:  # an outage: retryable, says nothing about the explanation
            return self._result(None, ERROR, seqs, {"error": str(exc)})
        result = self._from_predictions(seqs, preds, scale, self._spent() - before)
        if text != explanation.strip():
            result.details["scored_text"] = text
        return result

    def _spent(self) -> int:
        """Tokens the simulator has processed so far (its cost counter, when it keeps one)."""
        return int(getattr(self.backend, "tokens_processed", 0))

    def _from_predictions(self, seqs: Sequence[TextExample], preds: list[np.ndarray],
                          scale: float, spent: int) -> ScoreResult:
        bad = [i for i, (s, p) in enumerate(zip(seqs, preds, strict=True))
               if len(p) != len(s.tokens)]
        if bad:
            return self._result(None, PARSE_ERROR, seqs, {
                "error": f"prediction count differs from token count in sequences {bad}"})
        truth = [normalise_truth(s.activations, scale) for s in seqs]
        r_all = pooled_pearson(truth, preds)
        details: dict[str, Any] = {
            "r_all": r_all, "n_tokens": int(sum(len(t) for t in truth)),
            "tokens_processed": spent, "scale": scale,
            "kinds": [s.kind for s in seqs], "document_ids": [s.document_id for s in seqs],
            "predictions": [[round(float(x), 2) for x in p] for p in preds],
        }
        for label, kinds in (("r_top", {"top", "quantile"}), ("r_random", {"random"})):
            idx = [i for i, s in enumerate(seqs) if s.kind in kinds]
            details[label] = pooled_pearson([truth[i] for i in idx], [preds[i] for i in idx])
        status = OK if r_all is not None else DEGENERATE
        result = self._result(r_all, status, seqs, details)
        result.truth, result.pred, result.metric = truth, list(preds), "pooled_pearson"
        return result

    def _result(self, value: float | None, status: str, seqs: Sequence[TextExample],
                details: dict[str, Any]) -> ScoreResult:
        return ScoreResult(self.name, self.simulator, value if status == OK else None,
                           status, len(seqs), details)
