"""Choosing simulators and building scorers: ``auto`` falls back to embeddings when the LLM
fails its sanity check, every scorer shows the one interface, and building one loads nothing
when the sanity verdict is cached."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.config import ScoringConfig
from autolabel.embed import HashEmbedder
from autolabel.errors import ConfigError
from autolabel.llm import FakeClient
from autolabel.scoring import sanity
from autolabel.scoring.classifiers import DetectionScorer, FuzzingScorer
from autolabel.scoring.factory import choose_simulator, make_scorer, needs_llm
from autolabel.scoring.local_simulator import LocalLogprobSimulator
from autolabel.scoring.simulation import SimulationScorer
from autolabel.scoring.simulators import EchoLogprobSimulator, EmbeddingSimulator, JSONSimulator
from autolabel.scoring.types import SanityReport
from tests.scoring.fakes import CHAT_ONLY, CountingBackend, slot_table


def test_auto_falls_back_to_embeddings_when_the_llm_fails_its_sanity_check() -> None:
    client = FakeClient("deaf-auto", logprob_table=slot_table({"2": -0.5}))
    simulator, report = choose_simulator("auto", client, HashEmbedder)
    assert isinstance(simulator, EmbeddingSimulator) and simulator.name == "embedding:hash-bow"
    assert report is not None and not report.passed
    again, cached = choose_simulator("auto", client, HashEmbedder)
    assert cached is report  # once per model per process
    llm, none = choose_simulator("llm", client, HashEmbedder)
    assert isinstance(llm, EchoLogprobSimulator) and none is None
    chat = FakeClient("chat", capabilities=CHAT_ONLY)
    assert isinstance(choose_simulator("llm", chat, HashEmbedder)[0], JSONSimulator)


class _NoEmbedder:
    """An embedder that must never embed (its model would load on the first call)."""

    name = "no-embed"
    dim = 4

    def embed(self, texts: object) -> np.ndarray:
        raise AssertionError("the embedding model was loaded")


@pytest.mark.parametrize("passed", [True, False])
def test_auto_identity_from_a_cached_verdict_loads_neither_model(passed: bool) -> None:
    backend = CountingBackend("lazy")
    key = sanity.sanity_key(LocalLogprobSimulator(backend))  # type: ignore[arg-type]
    sanity.store_report(key, SanityReport("llm-logprob:lazy", 1.0, 1.0, passed))
    sanity._SANITY_CACHE.clear()  # as in a new process: the verdict comes from disk
    made: list[_NoEmbedder] = []

    def provider() -> _NoEmbedder:
        made.append(_NoEmbedder())
        return made[-1]

    scorer = make_scorer("simulation", ScoringConfig(simulator="auto"), backend,  # type: ignore[arg-type]
                         provider)  # type: ignore[arg-type]
    assert scorer.name == "simulation"
    assert scorer.simulator == ("llm-logprob:lazy" if passed else "embedding:no-embed")
    assert scorer.sanity is not None and scorer.sanity.passed is passed
    assert backend.loads == 0 and len(made) == (0 if passed else 1)


def test_every_scorer_has_the_one_interface() -> None:
    client = FakeClient("chat", capabilities=CHAT_ONLY)
    config = ScoringConfig(simulator="embedding", seed=3)
    built = {n: make_scorer(n, config, client, HashEmbedder)
             for n in ("simulation", "detection", "fuzzing")}
    assert isinstance(built["simulation"], SimulationScorer)
    assert isinstance(built["fuzzing"], FuzzingScorer)
    assert type(built["detection"]) is DetectionScorer
    assert {n: (s.name, s.simulator, s.sanity) for n, s in built.items()} == {
        "simulation": ("simulation", "embedding:hash-bow", None),
        "detection": ("detection", "", None), "fuzzing": ("fuzzing", "", None)}


def test_which_scorers_need_an_llm_and_unknown_names() -> None:
    embedding, auto = ScoringConfig(simulator="embedding"), ScoringConfig(simulator="auto")
    assert not needs_llm("simulation", embedding) and needs_llm("simulation", auto)
    assert needs_llm("detection", embedding) and needs_llm("fuzzing", embedding)
    with pytest.raises(ConfigError, match="unknown scorer"):
        make_scorer("vibes", auto, None, HashEmbedder)
    with pytest.raises(ConfigError, match="needs an LLM"):
        make_scorer("detection", auto, None, HashEmbedder)
