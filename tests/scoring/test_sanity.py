"""The simulator sanity check and its cache: a simulator that ignores the explanation fails,
an oracle passes, and a stored verdict is read back without running (or loading) anything."""

from __future__ import annotations

import pytest

from autolabel.llm import FakeClient
from autolabel.scoring import sanity
from autolabel.scoring.local_simulator import LocalLogprobSimulator
from autolabel.scoring.sanity import (
    cached_sanity_check,
    sanity_check,
    sanity_key,
    store_report,
    stored_report,
)
from autolabel.scoring.simulators import EchoLogprobSimulator, JSONSimulator
from autolabel.scoring.types import SanityReport
from tests.scoring.fakes import CountingBackend, OracleSimulator, slot_table


def test_sanity_check_flags_a_simulator_that_ignores_the_explanation() -> None:
    client = FakeClient("deaf", logprob_table=slot_table({"2": -0.5, "3": -1.0}))
    report = sanity_check(EchoLogprobSimulator(client))
    assert not report.passed
    assert report.mean_abs_delta == pytest.approx(0.0)
    assert report.discrimination == 0.0
    assert report.simulator == "llm-echo:deaf"


def test_sanity_check_passes_an_oracle() -> None:
    report = sanity_check(OracleSimulator())
    assert report.passed and report.discrimination == 1.0 and report.mean_abs_delta > 0.5


def test_a_stored_verdict_is_read_back_from_disk_without_running_the_check() -> None:
    backend = CountingBackend("never-loaded")
    simulator = LocalLogprobSimulator(backend)  # type: ignore[arg-type]
    key = sanity_key(simulator)
    stored = SanityReport(simulator.name, 2.5, 0.9, True, {"features": {}})
    store_report(key, stored)
    sanity._SANITY_CACHE.clear()  # a new process: only the disk remembers
    again = cached_sanity_check(simulator)
    assert again == stored and backend.loads == 0
    assert stored_report(key) is again  # now remembered in this process too


def test_sanity_key_depends_on_model_and_prompt_not_on_loading() -> None:
    one = sanity_key(LocalLogprobSimulator(CountingBackend("a")))  # type: ignore[arg-type]
    other = sanity_key(LocalLogprobSimulator(CountingBackend("b")))  # type: ignore[arg-type]
    chat = FakeClient("a")
    assert one != other
    assert sanity_key(EchoLogprobSimulator(chat)) != sanity_key(JSONSimulator(chat))


def test_an_unreadable_cache_file_counts_as_missing() -> None:
    key = sanity_key(EchoLogprobSimulator(FakeClient("garbled")))
    sanity._sanity_path(key).parent.mkdir(parents=True, exist_ok=True)
    sanity._sanity_path(key).write_text("{not json")
    assert stored_report(key) is None
