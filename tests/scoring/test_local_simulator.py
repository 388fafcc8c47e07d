"""The in-process simulator: KV-prefix reuse equals the naive full prompt, the prefix is
processed once, and building it loads nothing."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.scoring.local_simulator import LocalLogprobSimulator
from tests.scoring.fakes import CountingBackend, tiny_local_client

SEQS = [["march", "was", "cold"], ["the", "king", "and", "queen", "in", "paris", "june"],
        ["dog"], ["one", "two", "three", "four"], []]


@pytest.mark.parametrize("sliding_window", [16, 4096])
def test_kv_prefix_reuse_matches_naive_full_prompt(sliding_window: int) -> None:
    """Batched sequences over one shared prefix cache (sliding layers included: the prefix is
    far longer than the window) give the same predictions as one full prompt per sequence."""
    sim = LocalLogprobSimulator(tiny_local_client(sliding_window), batch_size=3)
    assert len(sim.prefix_ids("names of months")) > 3 * 16
    fast = sim.predict("names of months", SEQS)
    naive = sim.predict_naive("names of months", SEQS)
    for a, b, tokens in zip(fast, naive, SEQS, strict=True):
        assert a.shape == (len(tokens),)
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert sim.name == "llm-logprob:tiny"


def test_local_simulator_processes_prefix_once() -> None:
    sim = LocalLogprobSimulator(tiny_local_client(), batch_size=64)
    sim.predict("names of months", SEQS[:4])
    n_prefix = len(sim.prefix_ids("names of months"))
    widths = [len(sim.suffix_ids(s)[0]) for s in SEQS[:4]]
    assert sim.tokens_processed == n_prefix + 4 * max(widths)


def test_building_the_local_simulator_loads_nothing() -> None:
    backend = CountingBackend("untouched")
    sim = LocalLogprobSimulator(backend)  # type: ignore[arg-type]
    assert sim.name == "llm-logprob:untouched" and sim.revision is None
    assert backend.loads == 0
