"""What every scorer and simulator shares: results, reports, the two protocols, statuses.

A *scorer* turns (explanation, held-out sequences, scale) into one :class:`ScoreResult`; the
score stage knows nothing else about it. ``name`` and ``simulator`` are the scorer's identity:
the stored scores are keyed by them, so both must be known before any model is loaded. A
*simulator* predicts per-token activations from an explanation alone (simulation scoring).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from autolabel.errors import LLMError

if TYPE_CHECKING:
    import numpy as np

    from autolabel.examples import TextExample

# The digit scale is 0-9, not Bills' 0-10: Gemma's tokenizer writes "10" as "1" + "0", so ten
# cannot be read from one slot (issue 9). Pearson r is scale-free, so nothing else changes.
DIGITS = tuple(str(d) for d in range(10))
SCALE_MAX = 9.0

# Score statuses: only ``ok`` carries a value; the others keep their reason in ``details``.
# ``error`` is an outage (transport or server failure: nothing was learnt about the
# explanation) and is retried by the next run; ``parse_error`` is a real reply that could not
# be read and ``degenerate`` an undefined metric, both facts about the explanation.
OK, PARSE_ERROR, ERROR, DEGENERATE = "ok", "parse_error", "error", "degenerate"
RETRYABLE = frozenset({ERROR})


class SimulationParseError(LLMError):
    """The simulator's reply could not be read as one prediction per token."""


@dataclass
class ScoreResult:
    """One score as the store keeps it; ``value`` is None unless ``status`` is ok."""

    scorer: str  # simulation | detection | fuzzing
    simulator: str  # which simulator produced it ("" for detection/fuzzing)
    value: float | None
    status: str  # ok | parse_error | error | degenerate
    n_examples: int
    details: dict[str, Any] = field(default_factory=dict)
    # What the value was computed from, one array per held-out unit (sequence, or example for
    # detection/fuzzing), and the metric's name in ``scoring.trust.METRICS``: the null
    # distribution and the bootstrap CI are recomputed from these without another LLM call.
    truth: list[np.ndarray] | None = field(default=None, repr=False)
    pred: list[np.ndarray] | None = field(default=None, repr=False)
    metric: str = ""


@dataclass
class SanityReport:
    """Does the simulator's output depend on the explanation at all? (issue 9)"""

    simulator: str
    mean_abs_delta: float  # mean |prediction(true) - prediction(wrong)| per token
    discrimination: float  # fraction of planted features where r(true) > r(wrong)
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Simulator(Protocol):
    """Predicts a feature's activation on each token from an explanation alone.

    ``name`` identifies it in stored scores and must not need the model loaded; a simulator
    loads whatever it needs on its first ``predict``.
    """

    name: str

    def predict(self, explanation: str, sequences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """One float array per sequence, one value per token."""
        ...


class LLMSimulator(Simulator, Protocol):
    """A simulator backed by an LLM: what its sanity verdict depends on, known without loading.

    ``template`` is the prompt it renders (its hash is part of the verdict's key) and
    ``revision`` the model weights' revision when it can be read from disk (None otherwise).
    """

    template: str

    @property
    def revision(self) -> str | None:
        """The model revision (file hash or commit) when known without loading it."""
        ...


class Scorer(Protocol):
    """The one interface the score stage uses.

    ``name`` and ``simulator`` ("" when the scorer has none) key the stored scores and are
    known without loading any model; ``sanity`` is the report that chose the simulator (None
    when no check ran). ``score`` takes the feature's held-out sequences, activating and random
    together (each has its ``kind``), and ``scale``, the feature's max train activation.
    """

    @property
    def name(self) -> str:
        """The scorer's name: simulation | detection | fuzzing."""
        ...

    @property
    def simulator(self) -> str:
        """The simulator's name ("" for scorers without one)."""
        ...

    @property
    def sanity(self) -> SanityReport | None:
        """Why this simulator was chosen (None when no sanity check was consulted)."""
        ...

    def score(self, explanation: str, sequences: Sequence[TextExample],
              scale: float) -> ScoreResult:
        """Score ``explanation`` on held-out ``sequences``."""
        ...


#: One explanation's scores: test (the reported one), validation (chooses; None without
#: validation data) and floor (the same scorer on the same test data with a wrong explanation).
ScoredSplits = tuple[ScoreResult, "ScoreResult | None", ScoreResult]


def score_with_floor(scorer: Scorer, text: str, wrong_text: str,
                     test: Sequence[TextExample], validation: Sequence[TextExample],
                     scale: float) -> ScoredSplits:
    """What the score stage stores for one explanation, wherever it is computed (this
    process or a Ray actor), so both give the same rows."""
    result = scorer.score(text, test, scale)
    chosen_by = scorer.score(text, validation, scale) if validation else None
    floor = scorer.score(wrong_text, test, scale)
    return result, chosen_by, floor
