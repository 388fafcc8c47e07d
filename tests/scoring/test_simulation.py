"""The simulation scorer: pooled r with the simulator recorded, top/random subsets, degenerate
predictions, and one explanation scored through a real server's echo + logprobs."""

from __future__ import annotations

import pytest

from autolabel.examples import TextExample
from autolabel.scoring.simulation import SimulationScorer
from autolabel.scoring.simulators import EchoLogprobSimulator
from tests.scoring.fakes import OracleSimulator


def test_simulation_score_records_simulator_subsets_and_degenerate() -> None:
    seqs = [TextExample(["In", " March"], [0.0, 4.0], "t1", "top"),
            TextExample([" June", " rain"], [4.0, 0.0], "t2", "quantile"),
            TextExample(["the", " dog"], [0.0, 0.0], "r1", "random")]
    result = SimulationScorer(OracleSimulator()).score("names of months", seqs, scale=4.0)
    assert result.status == "ok" and result.value == pytest.approx(1.0)
    assert result.simulator == "oracle" and result.scorer == "simulation"
    assert result.details["r_top"] == pytest.approx(1.0) and result.details["r_random"] is None
    assert result.details["document_ids"] == ["t1", "t2", "r1"]
    flat = SimulationScorer(OracleSimulator()).score("colour words", seqs, scale=4.0)
    assert flat.status == "degenerate" and flat.value is None and flat.simulator == "oracle"


@pytest.mark.slow
def test_echo_logprob_simulation_against_llama_cpp(llama_server: str) -> None:
    """Score one explanation through a real OpenAI-compatible server's echo + logprobs.

    One sequence, so one request: llama-cpp-python sorts the whole 262k vocabulary in Python
    for every echoed position (~0.9 s each here), and the few-shot prefix alone is ~260
    tokens. Pooled r is defined on one sequence's six tokens; subsets (top vs random) are
    covered with the oracle above."""
    from autolabel.llm import OpenAIClient

    client = OpenAIClient("gemma-3-270m", base_url=llama_server, timeout=600, max_retries=1)
    assert client.capabilities().echo_logprobs
    top = TextExample(tokens=[" In", " March", " and", " April", " it", " rained"],
                      activations=[0, 1.0, 0, 0.8, 0, 0], kind="top", document_id="d1")
    result = SimulationScorer(EchoLogprobSimulator(client)).score("names of months", [top],
                                                                  scale=1.0)
    assert result.simulator == "llm-echo:gemma-3-270m"
    assert result.status in {"ok", "degenerate"}, result.details
    assert result.n_examples == 1 and result.details["tokens_processed"] > 0
    if result.status == "ok":
        assert result.value is not None and -1.0 <= result.value <= 1.0
