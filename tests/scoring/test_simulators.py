"""Simulators without an in-process model: echo+logprobs slots, JSON replies (a count mismatch
is a parse error, never zeros), and the embedding simulator's cache and name."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.embed import HashEmbedder
from autolabel.examples import TextExample
from autolabel.llm import FakeClient
from autolabel.scoring.simulation import SimulationScorer
from autolabel.scoring.simulators import EchoLogprobSimulator, EmbeddingSimulator, JSONSimulator
from tests.scoring.fakes import CHAT_ONLY, slot_table

# ------------------------------------------------------------------------ echo / JSON


def test_echo_simulator_reads_slot_logprobs() -> None:
    client = FakeClient("echo-model", logprob_table=slot_table({"7": -0.1, "1": -100.0}))
    sim = EchoLogprobSimulator(client)
    preds = sim.predict("names of months", [["In", " March"], ["a"]])
    assert [len(p) for p in preds] == [2, 1]
    np.testing.assert_allclose(np.concatenate(preds), 7.0, atol=1e-6)
    assert sim.name == "llm-echo:echo-model"


def test_echo_simulator_without_digits_is_parse_error() -> None:
    client = FakeClient("echo-model")  # default table: no digits anywhere
    seqs = [TextExample(["a", "b"], [0.0, 1.0], "d1", "top")]
    result = SimulationScorer(EchoLogprobSimulator(client)).score("x", seqs, scale=1.0)
    assert (result.status, result.value, result.simulator) == ("parse_error", None,
                                                                "llm-echo:echo-model")


def test_json_simulator_count_mismatch_is_parse_error_not_zeros() -> None:
    client = FakeClient("chat-model", capabilities=CHAT_ONLY)
    client.enqueue("[0, 9]")  # two numbers for three tokens
    seqs = [TextExample(["In", " March", " it"], [0.0, 1.0, 0.0], "d1", "top")]
    result = SimulationScorer(JSONSimulator(client)).score("months", seqs, scale=1.0)
    assert result.status == "parse_error" and result.value is None
    assert result.simulator == "llm-json:chat-model"
    assert "3 numbers" in result.details["error"]


def test_json_simulator_scores_a_good_reply() -> None:
    client = FakeClient("chat-model", capabilities=CHAT_ONLY)
    client.enqueue("Sure: [0, 9, 1]", "[0, 0]")
    seqs = [TextExample(["In", " March", " it"], [0.0, 2.0, 0.0], "d1", "top"),
            TextExample(["a", "b"], [0.0, 0.0], "d2", "random")]
    result = SimulationScorer(JSONSimulator(client)).score("months", seqs, scale=2.0)
    assert result.status == "ok" and result.value is not None and result.value > 0.9
    assert result.details["r_top"] is not None and result.details["r_random"] is None
    assert result.n_examples == 2


# ------------------------------------------------------------------------ embedding


def test_embedding_simulator_caches_and_names_itself() -> None:
    embedder = HashEmbedder()
    sim = EmbeddingSimulator(embedder)
    preds = sim.predict("march", [["In", " March"], [" march", " it"]])
    assert preds[0][1] == pytest.approx(1.0) and preds[0][0] < 0.5
    assert sim.tokens_processed == 4  # "In", "March", "march" (= the explanation), "it"
    sim.predict("march", [[" it", "In"]])
    assert sim.tokens_processed == 4  # all cached
    with pytest.raises(Exception, match="mode"):
        EmbeddingSimulator(embedder, mode="bogus")


@pytest.mark.slow
def test_embedding_simulator_ranks_months_above_verbs() -> None:
    from autolabel.embed import LocalEmbedder

    sim = EmbeddingSimulator(LocalEmbedder())
    sentence = "The meeting in March was moved to April because of the storm in June"
    tokens = sentence.split(" ")
    acts = [1.0 if t in ("March", "April", "June") else 0.0 for t in tokens]
    seqs = [TextExample([" " + t for t in tokens], acts, "d", "top")]
    scorer = SimulationScorer(sim)
    months = scorer.score("names of months", seqs, scale=1.0)
    verbs = scorer.score("verbs", seqs, scale=1.0)
    assert months.value is not None and verbs.value is not None
    assert months.value > verbs.value + 0.3
    assert months.simulator == "embedding:all-MiniLM-L6-v2"
