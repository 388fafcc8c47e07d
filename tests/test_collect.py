"""Collector tests against a brute-force reference on a fake model whose features are known.

The fake "subject" embeds token id i as a one-hot vector scaled by a known value, and the fake
SAE is the identity with a ReLU, so latent i fires exactly on token i with that value. Values sit
on a 0.25 grid, which is coarser than every fine quantile bin, so the streaming quantile sample
must equal the exact priority sample (the same keys are replayed with ``draw_keys``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from autolabel.collect import (
    HISTOGRAM_EDGES,
    CollectSettings,
    ExampleCollector,
    FeatureResult,
    bin_quotas,
    collect,
    draw_keys,
)
from autolabel.errors import CollectionError, InputError

PAD, BOS, VOCAB, T = 0, 1, 16, 8


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
    """Documents split by parity; windows are BOS + up to 7 tokens, left-padded to T."""
    rng = np.random.default_rng(seed)
    windows = []
    for d in range(n_docs):
        tokens = rng.integers(2, VOCAB, size=int(rng.integers(3, 30))).tolist()
        for start in range(0, len(tokens), T - 1):
            chunk = (BOS, *tokens[start : start + T - 1])
            windows.append(Window(f"doc{d}", "test" if d % 2 else "train", start, chunk))
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

    wref: int
    split: str
    document_id: str
    start: int
    tokens: np.ndarray
    acts: np.ndarray
    max: float
    key: float


def reference(batches: list[Batch], features: list[int], seed: int) -> dict[int, list[Ref]]:
    gen = torch.Generator().manual_seed(seed)
    out: dict[int, list[Ref]] = {f: [] for f in features}
    wref = 0
    for batch in batches:
        keys = draw_keys(gen, len(batch.windows), len(features))
        values = token_values(batch.input_ids)
        for row, w in enumerate(batch.windows):
            real = batch.attention_mask[row].bool()
            ids = batch.input_ids[row][real]
            for j, f in enumerate(features):
                acts = torch.where(ids == f, values[row][real], 0.0).numpy().astype(np.float32)
                if f == BOS:
                    acts[:] = 0
                ref = Ref(wref, w.split, w.document_id, w.start, ids.numpy(), acts, 0.0, 0.0)
                ref.max, ref.key = float(acts.max()), float(keys[row, j])
                out[f].append(ref)
            wref += 1
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
        in_bin = [r for r in rest if _bin(r.max, float(fmax), n_bins) == b]
        out += sorted(in_bin, key=lambda r: r.key)[: quotas[b]]
    return out


def _bin(value: float, fmax: float, n_bins: int) -> int:
    return int(min(max(math.ceil(value * n_bins / fmax) - 1, 0), n_bins - 1))


def ref_random(refs: list[Ref], k: int) -> list[Ref]:
    quiet = [r for r in refs if r.split == "test" and r.max == 0 and (r.tokens != BOS).any()]
    return sorted(quiet, key=lambda r: r.key)[:k]


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


@pytest.fixture(scope="module")
def run() -> tuple[list[FeatureResult], dict[int, list[Ref]], CollectSettings]:
    settings = CollectSettings(seed=3)
    batches = make_batches()
    results = collect(FakeSubject(), FakeSAE(), batches, FEATURES, settings)
    return results, reference(batches, FEATURES, settings.seed), settings


def test_stats_match_brute_force(run: tuple) -> None:
    results, refs, _ = run
    for res in results:
        want = ref_stats(refs[res.feature])
        assert res.n_tokens == want["n_tokens"] and res.n_firing == want["n_firing"]
        assert res.max_activation == pytest.approx(want["max_activation"])
        assert res.mean_activation == pytest.approx(want["mean_activation"])
        assert res.mean_firing_activation == pytest.approx(want["mean_firing_activation"])
        assert res.density == pytest.approx(res.n_firing / res.n_tokens)
        assert res.histogram == want["histogram"]
        assert sum(res.histogram) == res.n_firing and res.histogram_edges == HISTOGRAM_EDGES


def test_top_examples_match_brute_force(run: tuple) -> None:
    results, refs, s = run
    for res in results:
        assert_same(examples(res, "train", "top"), ref_top(refs[res.feature], "train", s.train_top))
        assert_same(examples(res, "test", "top"), ref_top(refs[res.feature], "test", s.test_top))


def test_quantile_examples_are_the_exact_priority_sample(run: tuple) -> None:
    results, refs, s = run
    for res in results[2:]:
        for split, k_top, k in (("train", s.train_top, s.train_quantile), ("test", 10, 10)):
            got = examples(res, split, "quantile")
            want = ref_quantile(refs[res.feature], split, k_top, k, s.n_bins)
            assert len(want) >= k // 2  # reservoirs overflow; high bins may run short
            assert_same(got, want)
            assert [e.bin for e in got] == [_bin(r.max, res.max_activation, s.n_bins) for r in want]


def test_random_examples_are_silent_test_windows(run: tuple) -> None:
    results, refs, s = run
    for res in results:
        got = examples(res, "test", "random")
        assert_same(got, ref_random(refs[res.feature], s.random))
        assert all(e.split == "test" and not e.activations.any() for e in got)
        assert len(got) == s.random and all(e.bin is None for e in got)


def test_splits_never_share_documents_and_bins_hold(run: tuple) -> None:
    results, _, s = run
    for res in results:
        docs = {
            sp: {e.document_id for e in res.examples if e.split == sp} for sp in ("train", "test")
        }
        assert not docs["train"] & docs["test"]
        for e in res.examples:
            assert e.feature == res.feature and len(e.token_ids) == len(e.activations)
            assert e.max_activation == pytest.approx(float(e.activations.max()))
            if e.kind == "quantile":
                lo, hi = e.bin * res.max_activation / s.n_bins, (e.bin + 1) * res.max_activation
                assert lo < e.max_activation <= hi / s.n_bins + 1e-6
        for sp in ("train", "test"):
            keys = [(e.document_id, e.start) for e in res.examples if e.split == sp]
            assert len(keys) == len(set(keys))  # quantile never repeats a top window


def test_padding_and_bos_never_count(run: tuple) -> None:
    results, refs, _ = run
    for res in results[:2]:  # latent 0 fires on padding, latent 1 on BOS: both must be silent
        assert res.n_firing == 0 and res.max_activation == 0.0 and res.histogram == [0] * 32
        assert {e.kind for e in res.examples} == {"random"}
    n_real = sum(int((r.tokens != BOS).sum()) for r in refs[0])
    assert all(res.n_tokens == n_real for res in results)
    for e in results[5].examples:
        assert not e.activations[e.token_ids == BOS].any()


def test_deterministic_for_a_seed() -> None:
    batches = make_batches(40)
    a, b, c = (
        collect(FakeSubject(), FakeSAE(), batches, [3, 7], CollectSettings(seed=s))
        for s in (1, 1, 2)
    )

    def sig(results: list[FeatureResult]) -> list:
        return [(e.kind, e.split, e.document_id, e.start) for r in results for e in r.examples]

    assert sig(a) == sig(b)
    assert sig(a) != sig(c)


def test_growing_maxima_merge_fine_bins_exactly() -> None:
    """Maxima grow over time (fine bins merge repeatedly); the sample must stay exact."""
    gen = np.random.default_rng(1)
    settings = CollectSettings(train_top=3, train_quantile=7, test_top=2, test_quantile=4, n_bins=3)
    coll = ExampleCollector([10, 20], window=4, settings=settings)
    keys_gen = torch.Generator().manual_seed(settings.seed)
    seen: dict[int, list[Ref]] = {0: [], 1: []}
    for step in range(60):
        levels = gen.integers(0, 1 + step // 4, size=(5, 2))  # grid j -> value (j + 0.25) * 0.8
        acts = torch.zeros((5, 4, 2))
        acts[:, 2, :] = torch.tensor((levels + 0.25) * 0.8, dtype=torch.float32)
        acts[:, 2, :] *= torch.tensor(gen.random((5, 2)) < 0.8)
        splits = ["train" if gen.random() < 0.5 else "test" for _ in range(5)]
        docs = [f"d{step}-{i}" for i in range(5)]
        coll.update(acts, torch.full((5, 4), 5), torch.ones((5, 4)), docs, splits, [0] * 5)
        keys = draw_keys(keys_gen, 5, 2)
        for i in range(5):
            for j in range(2):
                mx = float(acts[i, :, j].max())
                seen[j].append(
                    Ref(
                        step * 5 + i,
                        splits[i],
                        docs[i],
                        0,
                        np.zeros(0),
                        acts[i, :, j].numpy(),
                        mx,
                        float(keys[i, j]),
                    )
                )
    for j, res in enumerate(coll.results()):
        for split, k_top, k in (("train", 3, 7), ("test", 2, 4)):
            want = ref_quantile(seen[j], split, k_top, k, 3)
            got = examples(res, split, "quantile")
            assert [e.document_id for e in got] == [r.document_id for r in want]


def test_state_does_not_grow_with_batches() -> None:
    def state_after(n: int) -> tuple[list[tuple[int, ...]], int]:
        coll = ExampleCollector(
            FEATURES, window=T, settings=CollectSettings(), ignore_token_ids={BOS}
        )
        batches = make_batches(2000, batch=8)[:n]
        for b in batches:
            acts = torch.nn.functional.one_hot(b.input_ids, VOCAB).float() * 1.5
            docs = [w.document_id for w in b.windows]
            coll.update(
                acts,
                b.input_ids,
                b.attention_mask,
                docs,
                [w.split for w in b.windows],
                [0] * len(docs),
            )
        return [tuple(t.shape) for t in coll.state_tensors()], coll.n_banked_windows

    shapes10, _ = state_after(10)
    shapes300, banked = state_after(1000)
    assert shapes10 == shapes300
    live = len(FEATURES) * (20 + 10 + 2 * 4 * 5 * 2 + 20)
    assert banked <= max(4096, 2 * live)


def test_progress_counts_real_tokens() -> None:
    batches = make_batches(10)
    counts: list[int] = []
    collect(FakeSubject(), FakeSAE(), batches, [2], progress=counts.append)
    assert counts == [int(b.attention_mask.sum()) for b in batches]


def test_longer_batches_widen_the_store() -> None:
    coll = ExampleCollector([0], window=2)
    for length in (2, 5):
        acts = torch.arange(1, length + 1, dtype=torch.float32).reshape(1, length, 1)
        ids = torch.arange(length).reshape(1, length)
        coll.update(acts, ids, torch.ones_like(ids), [f"d{length}"], ["train"], [0])
    top = examples(coll.results()[0], "train", "top")
    np.testing.assert_array_equal(top[0].activations, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(top[1].activations, [1, 2])


@pytest.mark.parametrize("features", [[], [3, 3], [-1], [VOCAB]])
def test_bad_features_are_rejected(features: list[int]) -> None:
    with pytest.raises(InputError, match="feature|latent"):
        collect(FakeSubject(), FakeSAE(), make_batches(2), features)


def test_bad_batches_are_rejected() -> None:
    coll = ExampleCollector([1, 2], window=4)
    ids, mask = torch.ones((2, 4), dtype=torch.long), torch.ones((2, 4))
    with pytest.raises(CollectionError, match=r"\[B, T, 2\]"):
        coll.update(torch.zeros((2, 4, 3)), ids, mask, ["a", "b"], ["train"] * 2, [0, 0])
    with pytest.raises(CollectionError, match="split"):
        coll.update(torch.zeros((2, 4, 2)), ids, mask, ["a", "b"], ["train", "dev"], [0, 0])
    with pytest.raises(CollectionError, match="no token windows"):
        collect(FakeSubject(), FakeSAE(), [], [2])
    with pytest.raises(InputError):
        CollectSettings(n_bins=0)
