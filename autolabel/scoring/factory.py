"""Building scorers from config: the only place that knows which scorer names exist.

Everything built here is cheap: simulators and scorers hold clients and embedders that load
their models on first use, and the ``auto`` simulator choice reads its sanity verdict from the
disk cache when one is there. So the score stage can learn each scorer's identity (``name`` +
``simulator``, which key the stored scores), find that nothing is left to score, and stop
without loading the LLM or the embedding model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from autolabel.config import ScoringConfig
from autolabel.errors import ConfigError
from autolabel.scoring.classifiers import DetectionScorer, FuzzingScorer
from autolabel.scoring.local_simulator import LocalLogprobSimulator
from autolabel.scoring.sanity import cached_sanity_check
from autolabel.scoring.simulation import SimulationScorer
from autolabel.scoring.simulators import EchoLogprobSimulator, EmbeddingSimulator, JSONSimulator
from autolabel.scoring.types import LLMSimulator, SanityReport, Scorer, Simulator

if TYPE_CHECKING:
    from autolabel.embed import Embedder
    from autolabel.llm import LLMClient

EmbedderProvider = Callable[[], "Embedder"]  # returns a (lazy) embedder; called at most once
SIMULATOR_MODES = ("llm", "embedding", "auto")
SCORER_NAMES = ("simulation", "detection", "fuzzing")


def llm_simulator(client: LLMClient) -> LLMSimulator:
    """The best simulator a client supports: in-process KV reuse > echo+logprobs > JSON."""
    if client.local_backend() is not None:
        return LocalLogprobSimulator(client)
    caps = client.capabilities()
    if caps.echo_logprobs and caps.max_top_logprobs >= 10:
        return EchoLogprobSimulator(client, top_logprobs=min(20, caps.max_top_logprobs))
    if caps.chat:
        return JSONSimulator(client)
    raise ConfigError(f"the LLM {client.model!r} supports neither echo+logprobs nor chat; set "
                      "scoring.simulator = embedding")


def choose_simulator(mode: str, client: LLMClient | None,
                     embedder_factory: EmbedderProvider) -> tuple[Simulator,
                                                                  SanityReport | None]:
    """``llm``: the LLM simulator; ``embedding``: the embedding one; ``auto``: the LLM only if
    its sanity check passes (read from the disk cache when there, else run once and stored),
    else embeddings. The report is returned so the run summary can say why."""
    if mode not in SIMULATOR_MODES:
        raise ConfigError(f"unknown scoring.simulator {mode!r}; use llm, embedding or auto")
    if mode == "embedding" or (mode == "auto" and client is None):
        return EmbeddingSimulator(embedder_factory()), None
    if client is None:
        raise ConfigError("scoring.simulator = llm needs an LLM; configure llm.* or use "
                          "scoring.simulator = embedding")
    simulator = llm_simulator(client)
    if mode == "llm":
        return simulator, None
    report = cached_sanity_check(simulator)
    return (simulator if report.passed else EmbeddingSimulator(embedder_factory())), report


def needs_llm(name: str, config: ScoringConfig) -> bool:
    """Whether scorer ``name`` calls an LLM under ``config`` (so a client is worth building)."""
    _check_name(name)
    return name != "simulation" or config.simulator != "embedding"


def make_scorer(name: str, config: ScoringConfig, client: LLMClient | None,
                embedder_provider: EmbedderProvider) -> Scorer:
    """The scorer called ``name``, ready to ``score``; nothing heavy is loaded here (except
    the LLM for a first-ever ``auto`` sanity check, whose verdict is then cached on disk)."""
    _check_name(name)
    if name == "simulation":
        simulator, report = choose_simulator(config.simulator, client, embedder_provider)
        return SimulationScorer(simulator, sanity=report)
    if client is None:
        raise ConfigError(f"the {name} scorer needs an LLM; configure [llm]")
    cls = FuzzingScorer if name == "fuzzing" else DetectionScorer
    return cls(client, seed=config.seed)


def _check_name(name: str) -> None:
    if name not in SCORER_NAMES:
        raise ConfigError(f"unknown scorer {name!r}; use one of {', '.join(SCORER_NAMES)}")
