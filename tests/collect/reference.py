"""A fake model whose features are known, and a brute-force reference for the collector.

The fake "subject" embeds token id i as a one-hot vector scaled by a known value, and the fake
SAE is the identity with a ReLU, so latent i fires exactly on token i with that value. Values sit
on a 0.25 grid, which is coarser than every fine quantile bin, so the streaming quantile sample
must equal the exact priority sample (the same keys are recomputed with ``priority_keys``, a
pure function of seed, feature and window). Ties (common on the grid) break on the window
identity, as in the collector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from autolabel.collect import HISTOGRAM_EDGES, FeatureResult, bin_quotas, priority_keys, window_ids

PAD, BOS, VOCAB, T = 0, 1, 16, 8
SPLIT_OF = ("train", "validation", "test")  # document d goes to SPLIT_OF[d % 3]


@dataclass(frozen=True)
class Window:
    document_id: str
    split: str
    start: int
    token_ids: tuple[int, ...]


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    windows: list[Window]


def token_values(ids: torch.Tensor) -> torch.Tensor:
    """The ground-truth activation of a token's own latent: a function of position and context."""
    prev = torch.nn.functional.pad(ids[:, :-1], (1, 0))
    pos = torch.arange(ids.shape[1])[None, :]
    return 0.5 + 0.25 * ((pos * 5 + prev) % 9).float()


class FakeSubject:
    special_token_ids = {BOS}

    def resid(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hot = torch.nn.functional.one_hot(input_ids, VOCAB).float()
        big = (input_ids == BOS) | (attention_mask == 0)  # BOS/padding: huge, must never count
        return hot * torch.where(big, 100.0, token_values(input_ids))[..., None]


class FakeSAE:
    d_sae = VOCAB

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def make_batches(n_docs: int = 120, seed: int = 0, batch: int = 4) -> list[Batch]:
    """Documents split by d % 3; windows are BOS + up to 7 tokens, left-padded to T."""
    rng = np.random.default_rng(seed)
    windows = []
    for d in range(n_docs):
        tokens = rng.integers(2, VOCAB, size=int(rng.integers(3, 30))).tolist()
        for start in range(0, len(tokens), T - 1):
            chunk = (BOS, *tokens[start : start + T - 1])
            windows.append(Window(f"doc{d}", SPLIT_OF[d % 3], start, chunk))
    return [_pad(windows[i : i + batch]) for i in range(0, len(windows), batch)]


def _pad(group: list[Window]) -> Batch:
    ids = torch.full((len(group), T), PAD)
    mask = torch.zeros((len(group), T), dtype=torch.long)
    for row, w in enumerate(group):
        ids[row, T - len(w.token_ids) :] = torch.tensor(w.token_ids)
        mask[row, T - len(w.token_ids) :] = 1
    return Batch(ids, mask, group)


@dataclass
class Ref:
    """Brute-force per-window truth for one feature column."""

    wref: int  # the window's identity (the collector's tie-break), not its arrival number
    split: str
    document_id: str
    start: int
    tokens: np.ndarray
    acts: np.ndarray
    max: float
    key: float


def reference(batches: list[Batch], features: list[int], seed: int) -> dict[int, list[Ref]]:
    out: dict[int, list[Ref]] = {f: [] for f in features}
    for batch in batches:
        wids = window_ids([w.document_id for w in batch.windows], [w.start for w in batch.windows])
        keys = priority_keys(seed, torch.tensor(features), wids)
        values = token_values(batch.input_ids)
        for row, w in enumerate(batch.windows):
            wref = int(wids[row])
            real = batch.attention_mask[row].bool()
            ids = batch.input_ids[row][real]
            for j, f in enumerate(features):
                acts = torch.where(ids == f, values[row][real], 0.0).numpy().astype(np.float32)
                if f == BOS:
                    acts[:] = 0
                ref = Ref(wref, w.split, w.document_id, w.start, ids.numpy(), acts, 0.0, 0.0)
                ref.max, ref.key = float(acts.max()), float(keys[row, j])
                out[f].append(ref)
    return out


def ref_stats(refs: list[Ref]) -> dict[str, object]:
    acts = np.concatenate([r.acts[r.tokens != BOS] for r in refs]).astype(np.float64)
    firing = acts[acts > 0]
    inner = np.array(HISTOGRAM_EDGES[1:-1], dtype=np.float32)
    hist = np.bincount(np.searchsorted(inner, firing.astype(np.float32), side="right"), None, 32)
    return {
        "n_tokens": len(acts),
        "n_firing": len(firing),
        "max_activation": float(acts.max()),
        "mean_activation": acts.sum() / len(acts),
        "mean_firing_activation": firing.sum() / len(firing) if len(firing) else 0.0,
        "histogram": hist.tolist(),
    }


def ref_top(refs: list[Ref], split: str, k: int) -> list[Ref]:
    firing = [r for r in refs if r.split == split and r.max > 0]
    return sorted(firing, key=lambda r: (-r.max, r.wref))[:k]


def ref_quantile(refs: list[Ref], split: str, k_top: int, k: int, n_bins: int) -> list[Ref]:
    fmax = max(np.float32(r.max) for r in refs)
    top = {r.wref for r in ref_top(refs, split, k_top)}
    rest = [r for r in refs if r.split == split and r.max > 0 and r.wref not in top]
    quotas = bin_quotas(k, n_bins)
    out = []
    for b in range(n_bins):
        in_bin = [r for r in rest if qbin(r.max, float(fmax), n_bins) == b]
        out += sorted(in_bin, key=lambda r: (r.key, r.wref))[: quotas[b]]
    return out


def qbin(value: float, fmax: float, n_bins: int) -> int:
    """The final quantile bin of a value on (0, fmax], as the collector assigns it."""
    return int(min(max(math.ceil(value * n_bins / fmax) - 1, 0), n_bins - 1))


def ref_random(refs: list[Ref], k: int, split: str = "test") -> list[Ref]:
    quiet = [r for r in refs if r.split == split and r.max == 0 and (r.tokens != BOS).any()]
    return sorted(quiet, key=lambda r: (r.key, r.wref))[:k]


def examples(result: FeatureResult, split: str, kind: str) -> list:
    chosen = [e for e in result.examples if e.split == split and e.kind == kind]
    assert [e.rank for e in chosen] == list(range(len(chosen)))
    return chosen


def assert_same(got: list, want: list[Ref]) -> None:
    assert [(e.document_id, e.start) for e in got] == [(r.document_id, r.start) for r in want]
    for e, r in zip(got, want, strict=True):
        assert e.token_ids.dtype == np.int32 and e.activations.dtype == np.float32
        np.testing.assert_array_equal(e.token_ids, r.tokens)
        np.testing.assert_array_equal(e.activations, r.acts)
        assert e.max_activation == pytest.approx(r.max)


FEATURES = list(range(VOCAB))
