"""Scoring explanations: simulation (Bills et al. 2023), detection and fuzzing (Paulo et al.
2024), each on held-out data and each beside its floor (the score stage pairs them).

- :mod:`~autolabel.scoring.types`: the one :class:`Scorer` interface, :class:`Simulator`,
  :class:`ScoreResult`, :class:`SanityReport`;
- :mod:`~autolabel.scoring.metrics`: pooled Pearson r and the other numbers;
- :mod:`~autolabel.scoring.simulators` / :mod:`~autolabel.scoring.local_simulator`: the
  simulators (server echo+logprobs, chat JSON, embeddings; the in-process KV-prefix one);
- :mod:`~autolabel.scoring.simulation`, :mod:`~autolabel.scoring.classifiers`: the scorers;
- :mod:`~autolabel.scoring.planted`, :mod:`~autolabel.scoring.sanity`: planted-rule features
  and the simulator sanity check built on them;
- :mod:`~autolabel.scoring.factory`: scorers from config (:func:`make_scorer`).
"""

from __future__ import annotations

from autolabel.scoring.classifiers import DetectionScorer, FuzzingScorer
from autolabel.scoring.factory import (
    SCORER_NAMES,
    choose_simulator,
    llm_simulator,
    make_scorer,
    needs_llm,
)
from autolabel.scoring.local_simulator import LocalLogprobSimulator
from autolabel.scoring.metrics import (
    balanced_accuracy,
    expected_digit,
    normalise_truth,
    pooled_pearson,
    roc_auc,
)
from autolabel.scoring.planted import (
    PlantedData,
    PlantedFeature,
    hf_tokenize,
    planted_features,
    planted_from_corpus,
    wrong_description,
)
from autolabel.scoring.sanity import SANITY_VERSION, cached_sanity_check, sanity_check
from autolabel.scoring.simulation import SimulationScorer
from autolabel.scoring.simulators import (
    EchoLogprobSimulator,
    EmbeddingSimulator,
    JSONSimulator,
    parse_json_predictions,
    simulation_lines,
    simulation_prefix,
)
from autolabel.scoring.types import (
    SanityReport,
    ScoredSplits,
    Scorer,
    ScoreResult,
    SimulationParseError,
    Simulator,
    score_with_floor,
)

__all__ = [
    "SANITY_VERSION", "SCORER_NAMES", "DetectionScorer", "EchoLogprobSimulator",
    "EmbeddingSimulator", "FuzzingScorer", "JSONSimulator", "LocalLogprobSimulator", "PlantedData",
    "PlantedFeature", "SanityReport", "ScoreResult", "ScoredSplits", "Scorer",
    "SimulationParseError", "SimulationScorer", "Simulator", "balanced_accuracy",
    "cached_sanity_check", "choose_simulator", "expected_digit", "hf_tokenize", "llm_simulator",
    "make_scorer", "needs_llm", "normalise_truth", "parse_json_predictions", "planted_features",
    "planted_from_corpus", "pooled_pearson", "roc_auc", "sanity_check", "score_with_floor",
    "simulation_lines", "simulation_prefix", "wrong_description",
]
