"""The local executor keeps the default SAE's training passes for the collection after it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from autolabel import db as dbm
from autolabel.config import Config, load_config
from autolabel.loading import RunContext
from autolabel.pipeline.collect import collect_stage
from autolabel.subject import ResidualMemo, SubjectModel
from tests.collect.snapshots import collected


def _config(parts: dict[str, Path]) -> Config:
    return load_config(overrides={
        "subject.model": str(parts["model"]), "subject.layer": 2, "subject.device": "cpu",
        "sae.sae": "default", "sae.d_sae": 16, "sae.k": 4, "sae.train_tokens": 1500,
        "sae.eval_tokens": 500, "corpus.source": str(parts["corpus"]), "corpus.window": 16,
        "collect.tokens": 4000, "collect.features": "0:16", "collect.batch_size": 4}, environ={})


def _count_forwards(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every real forward pass, labelled by what the subject's memo was doing then."""
    calls: list[str] = []
    forward = SubjectModel._forward

    def counted(self: SubjectModel, input_ids: Any, attention_mask: Any) -> Any:
        memo = self.memo
        calls.append("none" if memo is None else "train" if memo.recording else "collect")
        return forward(self, input_ids, attention_mask)

    monkeypatch.setattr(SubjectModel, "_forward", counted)
    return calls


def test_collection_reuses_the_sae_trainings_forward_passes(
        tiny_parts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOLABEL_CACHE_DIR", str(tmp_path / "cache"))
    calls = _count_forwards(monkeypatch)
    config = _config(tiny_parts)
    first_ctx = RunContext(config, dbm.open_database(str(tmp_path / "a.db")))
    collect_stage(config, first_ctx.database, ctx=first_ctx)  # trains the SAE, then collects
    trained, first = calls.count("train"), calls.count("collect") + calls.count("none")
    assert first_ctx.subject.memo is None  # freed once collection is done
    calls.clear()
    collect_stage(config, dbm.open_database(str(tmp_path / "b.db")))  # SAE cached: no memo
    assert set(calls) == {"none"}
    reused = len(calls) - first
    assert 0 < reused <= trained  # the first run recomputed only what training had not seen
    assert collected(tmp_path / "a.db") == collected(tmp_path / "b.db")  # the very same results


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(seed))
    return ids, torch.ones_like(ids)


def test_memo_hands_each_batch_out_once_and_only_for_that_batch() -> None:
    memo = ResidualMemo()
    ids, mask = _batch(0)
    resid = torch.randn(2, 8, 4)
    memo.keep(ids, mask, resid)
    assert memo.take(*_batch(1)) is None
    other_mask = mask.clone()
    other_mask[0, -1] = 0
    assert memo.take(ids, other_mask) is None  # same ids, different padding: not the same batch
    assert memo.take(ids, mask) is resid
    assert memo.take(ids, mask) is None and len(memo) == 0 and memo.hits == 1


def test_memo_keeps_nothing_over_budget_or_after_recording() -> None:
    resid = torch.randn(2, 8, 4)
    small = ResidualMemo(max_bytes=resid.nelement() * resid.element_size())
    small.keep(*_batch(0), resid)
    small.keep(*_batch(1), resid)  # would exceed the budget
    assert len(small) == 1
    stopped = ResidualMemo()
    stopped.recording = False
    stopped.keep(*_batch(0), resid)
    assert len(stopped) == 0
