"""Streaming example collection and feature statistics: one pass over the corpus.

The corpus can be far larger than memory, so every per-feature quantity is a fixed-size state
tensor updated with vectorised torch ops per batch; memory is O(features × slots × window) and
does not grow with the number of batches.

Units. A *window* (one row of a batch) is the unit of an example; its *max activation* is the
largest activation of the feature over the window's real tokens. Padding and special tokens
(BOS, …) are excluded from every statistic and maximum, and their activations are stored as 0.
Activations are clamped at 0: SAE latents are non-negative, "firing" means act > 0.

What is kept per feature and split (train / validation / test are separate; the split is
decided upstream by document, so a document never feeds more than one of explaining, choosing
among explanations and scoring the chosen one):

* **top** — the k windows with the largest max activation (ties: the smaller window identity).
* **quantile** — windows sampled uniformly within each of ``n_bins`` equal-width bins of
  (0, feature max], excluding the split's top windows. Scheme (the max is only known at the
  end): every (window, feature) pair has one priority key, a pure function of (seed, feature,
  document, window start) (:mod:`autolabel.collect.keys`); a uniform sample of size q from a
  set is the q smallest keys. Windows first meet the top-k store; whatever is not (or no
  longer) a top window flows on to *fine* reservoirs: ``_FINE_PER_BIN × n_bins`` equal-width
  bins of (0, 2^e], where 2^e is the smallest power of two above the feature's running max,
  each keeping the m smallest keys (m = the largest per-bin quota). When the max passes 2^e,
  e grows and fine bins merge pairwise (2^j at a time); merging reservoirs keeps the smallest
  keys of the union, so every fine reservoir is always the exact priority sample of its bin.
  At the end the fine reservoirs are pooled into the final bins by each window's actual
  value and the smallest keys per final bin win. This is exact for final bins made of whole
  fine bins; a fine bin that straddles a final edge (at most one per edge, since a final bin
  spans >= 2 fine bins) may lend fewer windows to one side than an exact sample would.
* **random** — windows of *validation* and of *test* documents (``RANDOM_SPLITS``, one
  reservoir each) where the feature never fires (max == 0), a uniform sample (smallest keys);
  scorers use them as negatives.

Determinism and merging. Every store keeps the items that are smallest by (score, window
identity), a total order on pure functions of the window, so the state after a set of windows
does not depend on their order, their batching, the features collected beside a feature, or
which shard saw them. Hence ``merge``: folding shard B's state into shard A's (B's top items
offered to A's top store, whatever loses flowing on to the reservoirs exactly as evicted top
windows do, B's reservoirs absorbed after re-binning on the merged scale) gives exactly the
state one process would have reached over A's and B's windows together: the union's top-k
contains each part's top-k losers only if they lose, and the q smallest keys of a union are
among the q smallest keys of its parts. Sums are kept in exact fixed point (integer units of
2**-32 per value) so that they, too, do not depend on the order of additions.

Statistics per feature: tokens seen, firing tokens, density, max, mean over all tokens, mean
over firing tokens, and a histogram of firing-token activations on fixed log-spaced edges
(``HISTOGRAM_EDGES``: 1e-3 … 1e5, 4 bins per decade; values outside fall into the end bins,
so the counts always sum to n_firing).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import numpy as np

from autolabel.collect.keys import priority_keys, window_ids
from autolabel.collect.slots import Items, Slots, beats, cat_items, numpy_slots, ranked
from autolabel.collect.types import (
    HISTOGRAM_EDGES,
    RANDOM_SPLITS,
    SPLITS,
    CollectSettings,
    FeatureResult,
    check_features,
)
from autolabel.errors import CollectionError
from autolabel.examples import Example

if TYPE_CHECKING:
    from torch import Tensor

_FINE_PER_BIN = 4
_NO_SCALE = -(10**6)  # exponent of a feature that has not fired yet
_GC_MIN = 4096
_FRACTION_BITS = 32  # exact sums: activations in integer units of 2**-32


def bin_quotas(total: int, n_bins: int) -> list[int]:
    """Spread ``total`` quantile examples over bins; the remainder goes to the highest bins."""
    base, extra = divmod(total, n_bins)
    return [base + (1 if b >= n_bins - extra else 0) for b in range(n_bins)]


def fixed_point(values: Tensor) -> tuple[Tensor, Tensor]:
    """Whole and fractional parts (units of 2**-32) of non-negative values, as int64: adding
    these is exact and associative, unlike adding floats."""
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    v = values.double().clamp(0, 2.0**62)
    whole = torch.floor(v)
    return whole.long(), torch.round((v - whole) * 2.0**_FRACTION_BITS).long()


class _Batch:
    """One update's masked activations plus the lookups every store needs."""

    def __init__(self, acts: Tensor, input_ids: Tensor, mask: Tensor, ignore: Tensor) -> None:
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        real = mask.bool()
        self.valid = real & ~torch.isin(input_ids, ignore)
        self.acts = acts.float().clamp_min(0)  # a fresh copy: the caller's tensor is not touched
        if not bool(self.valid.all()):
            self.acts.masked_fill_(~self.valid[..., None], 0.0)
        self.wmax = self.acts.amax(1) if acts.shape[1] else torch.zeros(acts.shape[::2])
        self.lengths = real.sum(1)
        all_real = bool(real.all())
        self.order = None if all_real else torch.sort((~real).to(torch.int8), dim=1, stable=True)[1]

    def window_acts(self, b: Tensor, f: Tensor, width: int) -> Tensor:
        """Per-token activations of feature column f in row b, padding removed, width W."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        rows = self.acts[b, :, f]
        if self.order is not None:
            rows = rows.gather(1, self.order[b])
        if rows.shape[1] >= width:
            return rows[:, :width].contiguous()
        return torch.nn.functional.pad(rows, (0, width - rows.shape[1]))


class ExampleCollector:
    """Per-feature top / quantile / random examples and statistics, updated batch by batch."""

    def __init__(
        self,
        features: Sequence[int],
        window: int,
        settings: CollectSettings = CollectSettings(),  # noqa: B008 - frozen, safe default
        ignore_token_ids: Collection[int] = (),
    ) -> None:
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        check_features(features, None)
        if window < 1:
            raise CollectionError(f"window must be >= 1 token, got {window}; fix the window size")
        self.features = [int(f) for f in features]
        self.settings = settings
        self.width = int(window)
        self._ignore = torch.tensor(sorted({int(t) for t in ignore_token_ids}), dtype=torch.int64)
        self._feature_ids = torch.tensor(self.features, dtype=torch.int64)
        self._hist_inner = torch.tensor(HISTOGRAM_EDGES[1:-1], dtype=torch.float32)
        self._init_state(len(self.features))

    def _init_state(self, n: int) -> None:
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        s = self.settings
        self._n_fine = _FINE_PER_BIN * s.n_bins
        self._top = {sp: Slots(n, s.top(sp), self.width) for sp in SPLITS}
        self._res = {
            sp: Slots(n * self._n_fine, max(bin_quotas(s.quantile(sp), s.n_bins)), self.width)
            for sp in SPLITS
        }
        self._rand = {sp: Slots(n, s.random, None) for sp in RANDOM_SPLITS}
        self._exp = torch.full((n,), _NO_SCALE, dtype=torch.int64)
        self._n_tokens = 0
        self._n_firing = torch.zeros(n, dtype=torch.int64)
        self._sum = torch.zeros((2, n), dtype=torch.int64)  # whole, fraction (2**-32 units)
        self._max = torch.zeros(n, dtype=torch.float32)
        self._hist = torch.zeros((n, len(HISTOGRAM_EDGES) - 1), dtype=torch.int64)
        self._bank: dict[int, tuple[str, str, int, np.ndarray]] = {}
        self._next_wref = 0
        self._gc_at = _GC_MIN

    def state_tensors(self) -> list[Tensor]:
        """Every per-feature state tensor (their sizes never depend on the corpus length)."""
        stats = [self._exp, self._n_firing, self._sum, self._max, self._hist]
        return [t for s in self._stores() for t in s.tensors()] + stats

    def _stores(self) -> list[Slots]:
        return [*self._top.values(), *self._res.values(), *self._rand.values()]

    @property
    def n_banked_windows(self) -> int:
        """Windows whose tokens are kept; bounded by 2x the windows any slot refers to."""
        return len(self._bank)

    def update(
        self,
        acts: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        document_ids: Sequence[str],
        splits: Sequence[str],
        starts: Sequence[int],
    ) -> None:
        """Fold one batch in; ``acts`` is [B, T, F] for the selected features, on any device."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        with torch.no_grad():
            self._check_batch(acts, input_ids, attention_mask, document_ids, splits, starts)
            ids, mask = input_ids.detach().cpu().long(), attention_mask.detach().cpu()
            batch = _Batch(acts.detach().cpu(), ids, mask, self._ignore)
            self._widen(int(batch.lengths.max()) if len(batch.lengths) else 0)
            self._add_stats(batch)
            wrefs = self._register(ids, mask, document_ids, splits, starts)
            wids = window_ids(document_ids, starts)
            keys = priority_keys(self.settings.seed, self._feature_ids, wids)
            self._grow_scale(batch.wmax.amax(0) if batch.wmax.shape[0] else None)
            for split in SPLITS:
                in_split = torch.tensor([s == split for s in splits], dtype=torch.bool)
                self._offer_split(split, batch, in_split, keys, (wids, wrefs))
                if split in self._rand:
                    self._offer_random(split, batch, in_split, keys, (wids, wrefs))
            self._collect_garbage()

    def _check_batch(
        self,
        acts: Tensor,
        input_ids: Tensor,
        mask: Tensor,
        document_ids: Sequence[str],
        splits: Sequence[str],
        starts: Sequence[int],
    ) -> None:
        n_b, n_t = input_ids.shape[:2] if input_ids.dim() == 2 else (-1, -1)
        if tuple(acts.shape) != (n_b, n_t, len(self.features)) or mask.shape != input_ids.shape:
            raise CollectionError(
                f"acts {tuple(acts.shape)} must be [B, T, {len(self.features)}] aligned with "
                f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(mask.shape)}; "
                "pass the selected feature columns of one batch"
            )
        if not len(document_ids) == len(splits) == len(starts) == n_b:
            raise CollectionError("document_ids, splits and starts need one entry per batch row")
        bad = sorted(set(splits) - set(SPLITS))
        if bad:
            raise CollectionError(f"unknown split(s) {bad}; windows must be one of {SPLITS}")

    def _widen(self, length: int) -> None:
        if length > self.width:
            self.width = length
            for store in self._stores():
                store.widen(length)

    def _add_stats(self, batch: _Batch) -> None:
        """Token statistics from the firing entries only (sparse); acts are >= 0, so the sum
        over firing tokens is the sum over all tokens."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        self._n_tokens += int(batch.valid.sum())
        if batch.wmax.shape[0]:
            self._max = torch.maximum(self._max, batch.wmax.amax(0))
        nz = batch.acts.nonzero()
        values = batch.acts[nz[:, 0], nz[:, 1], nz[:, 2]]
        self._n_firing += torch.bincount(nz[:, 2], minlength=len(self._n_firing))
        self._add_sum(nz[:, 2], values)
        cells = nz[:, 2] * self._hist.shape[1] + torch.bucketize(values, self._hist_inner,
                                                                      right=True)
        self._hist.view(-1).index_add_(0, cells, torch.ones_like(cells))

    def _add_sum(self, features: Tensor, values: Tensor) -> None:
        """Exact fixed-point sums; the fraction carries into the whole part after each add."""
        for row, part in enumerate(fixed_point(values)):
            self._sum[row].index_add_(0, features, part)
        self._sum[0] += self._sum[1] >> _FRACTION_BITS
        self._sum[1] &= (1 << _FRACTION_BITS) - 1

    def _total(self, i: int) -> float:
        return float(self._sum[0, i]) + float(self._sum[1, i]) * 2.0**-_FRACTION_BITS

    def _register(
        self,
        ids: Tensor,
        mask: Tensor,
        document_ids: Sequence[str],
        splits: Sequence[str],
        starts: Sequence[int],
    ) -> Tensor:
        """Bank each window's real tokens once; slots refer to windows by a running number."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        first = self._next_wref
        real = mask.bool()
        for row in range(ids.shape[0]):
            tokens = ids[row][real[row]].numpy().astype(np.int32)
            self._bank[first + row] = (
                str(document_ids[row]),
                splits[row],
                int(starts[row]),
                tokens,
            )
        self._next_wref += ids.shape[0]
        return torch.arange(first, self._next_wref, dtype=torch.int64)

    def _items(self, batch: _Batch, b: Tensor, f: Tensor, keys: Tensor,
               refs: tuple[Tensor, Tensor]) -> Items:
        acts = batch.window_acts(b, f, self.width)
        return Items(f, batch.wmax[b, f], keys[b, f], refs[0][b], refs[1][b], acts)

    def _fine_bins(self, values: Tensor, features: Tensor) -> Tensor:
        """Fine bin of each value on its feature's (0, 2^e] grid: ceil(v·n / 2^e) - 1."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        exponent = (-self._exp[features]).clamp(-1000, 1000).double()
        scaled = values.double() * self._n_fine * torch.pow(2.0, exponent)
        return (torch.ceil(scaled).long() - 1).clamp(0, self._n_fine - 1)

    def _grow_scale(self, peak: Tensor | None) -> None:
        """Raise 2^e above each feature's new max, merging its fine reservoirs to match."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        if peak is None:
            return
        need = torch.frexp(peak).exponent.long()
        grown = ((peak > 0) & (need > self._exp)).nonzero().flatten()
        if not len(grown):
            return
        self._exp[grown] = need[grown]
        rows = (grown[:, None] * self._n_fine + torch.arange(self._n_fine)).flatten()
        for store in self._res.values():
            items = store.take_rows(rows)
            store.absorb(self._res_rows(items), items.key, items)

    def _res_rows(self, items: Items) -> Tensor:
        return items.feature * self._n_fine + self._fine_bins(items.value, items.feature)

    def _offer_split(self, split: str, batch: _Batch, in_split: Tensor, keys: Tensor,
                     refs: tuple[Tensor, Tensor]) -> None:
        """Top-k first; what is not (or no longer) top flows on to the fine reservoirs."""
        firing = (batch.wmax > 0) & in_split[:, None]
        top, res = self._top[split], self._res[split]
        w_score, w_wid = top.worst()
        admit = firing & beats(-batch.wmax.double(), refs[0][:, None], w_score, w_wid)
        b, f = admit.nonzero(as_tuple=True)
        items = self._items(batch, b, f, keys, refs)
        dropped = top.offer(f, -items.value.double(), items)
        b, f = (firing & ~admit).nonzero(as_tuple=True)
        rows = f * self._n_fine + self._fine_bins(batch.wmax[b, f], f)
        direct = res.admits(rows, keys[b, f], refs[0][b])  # reject before copying activations
        b, f = b[direct], f[direct]
        flow = cat_items([dropped, self._items(batch, b, f, keys, refs)])
        res.absorb(self._res_rows(flow), flow.key, flow)

    def _offer_random(self, split: str, batch: _Batch, in_split: Tensor, keys: Tensor,
                      refs: tuple[Tensor, Tensor]) -> None:
        """Uniform reservoir of the split's windows where the feature is silent (negatives)."""
        store = self._rand[split]
        has_tokens = batch.valid.any(1) & in_split
        w_score, w_wid = store.worst()
        quiet = (batch.wmax <= 0) & has_tokens[:, None] & beats(keys, refs[0][:, None],
                                                                w_score, w_wid)
        b, f = quiet.nonzero(as_tuple=True)
        items = Items(f, batch.wmax[b, f], keys[b, f], refs[0][b], refs[1][b], None)
        store.absorb(f, items.key, items)

    def _collect_garbage(self, force: bool = False) -> None:
        """Drop banked windows no slot refers to, so the bank stays O(slots)."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        if len(self._bank) <= self._gc_at and not force:
            return
        live = set(torch.cat([s.wref.flatten() for s in self._stores()]).unique().tolist())
        self._bank = {w: v for w, v in self._bank.items() if w in live}
        self._gc_at = max(_GC_MIN, 2 * len(self._bank))

    def merge(self, other: ExampleCollector) -> None:
        """Fold another collector's state in; ``other`` is consumed.

        The result equals one collector fed both sets of windows (module docstring), so shards
        of a corpus can be collected apart and merged in any order.
        """
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        with torch.no_grad():
            same = other.settings.sampling() == self.settings.sampling()
            if other.features != self.features or not same:
                raise CollectionError("only collectors of the same features and sampling "
                                      "settings can merge; collect every shard with one "
                                      "configuration")
            self._widen(other.width)
            other._widen(self.width)
            offset = self._next_wref
            self._bank.update({ref + offset: window for ref, window in other._bank.items()})
            self._next_wref += other._next_wref
            self._merge_stats(other)
            self._grow_scale(other._max)
            for split in SPLITS:
                top = _shifted(other._top[split].take_all(), offset)
                dropped = self._top[split].offer(top.feature, -top.value.double(), top)
                flow = cat_items([dropped, _shifted(other._res[split].take_all(), offset)])
                self._res[split].absorb(self._res_rows(flow), flow.key, flow)
            for split in RANDOM_SPLITS:
                quiet = _shifted(other._rand[split].take_all(), offset)
                self._rand[split].absorb(quiet.feature, quiet.key, quiet)
            self._collect_garbage(force=True)

    def _merge_stats(self, other: ExampleCollector) -> None:
        """Counts, exact sums, maxima and histograms add up (or take the max)."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        self._n_tokens += other._n_tokens
        self._n_firing += other._n_firing
        self._sum += other._sum
        self._sum[0] += self._sum[1] >> _FRACTION_BITS
        self._sum[1] &= (1 << _FRACTION_BITS) - 1
        self._max = torch.maximum(self._max, other._max)
        self._hist += other._hist

    def results(self) -> list[FeatureResult]:
        """One FeatureResult per requested feature, in the order they were given."""
        tops = {sp: numpy_slots(self._top[sp]) for sp in SPLITS}
        res = {sp: numpy_slots(self._res[sp]) for sp in SPLITS}
        rand = {sp: numpy_slots(self._rand[sp]) for sp in RANDOM_SPLITS}
        out = []
        for i, feature in enumerate(self.features):
            result = self._stats(i, feature)
            for sp in SPLITS:
                result.examples += self._top_examples(tops[sp], i, feature, sp)
                result.examples += self._quantile_examples(res[sp], i, feature, sp)
                if sp in rand:
                    result.examples += self._random_examples(rand[sp], i, feature, sp)
            out.append(result)
        return out

    def _stats(self, i: int, feature: int) -> FeatureResult:
        n_firing = int(self._n_firing[i])
        total = self._total(i)
        return FeatureResult(
            feature=feature,
            n_tokens=self._n_tokens,
            n_firing=n_firing,
            density=n_firing / self._n_tokens if self._n_tokens else 0.0,
            max_activation=float(self._max[i]),
            mean_activation=total / self._n_tokens if self._n_tokens else 0.0,
            mean_firing_activation=total / n_firing if n_firing else 0.0,
            histogram=[int(c) for c in self._hist[i]],
            histogram_edges=list(HISTOGRAM_EDGES),
        )

    def _example(
        self, slots: dict[str, np.ndarray], row: int, col: int, meta: tuple[int, str, str, int]
    ) -> Example:
        _, split, kind, rank = meta
        doc, _, start, tokens = self._bank[int(slots["wref"][row, col])]
        acts = slots["acts"][row, col, : len(tokens)] if "acts" in slots else None
        return Example(
            split=split,
            kind=kind,
            bin=None,
            rank=rank,
            document_id=doc,
            start=start,
            token_ids=tokens.copy(),
            activations=np.zeros(len(tokens), np.float32) if acts is None else acts.copy(),
            max_activation=float(slots["value"][row, col]),
        )

    def _top_examples(
        self, slots: dict[str, np.ndarray], i: int, feature: int, split: str
    ) -> list[Example]:
        cols = ranked(slots, i)
        return [
            self._example(slots, i, int(c), (feature, split, "top", r)) for r, c in enumerate(cols)
        ]

    def _random_examples(self, slots: dict[str, np.ndarray], i: int, feature: int,
                         split: str) -> list[Example]:
        cols = ranked(slots, i)
        meta = (feature, split, "random")
        return [self._example(slots, i, int(c), (*meta, r)) for r, c in enumerate(cols)]

    def _quantile_examples(
        self, slots: dict[str, np.ndarray], i: int, feature: int, split: str
    ) -> list[Example]:
        """Pool the fine reservoirs into final bins of (0, max]; smallest keys per bin win."""
        n_bins = self.settings.n_bins
        rows = np.arange(i * self._n_fine, (i + 1) * self._n_fine)
        r, c = np.nonzero(np.isfinite(slots["score"][rows]))
        if not len(r):
            return []
        values = slots["value"][rows[r], c].astype(np.float64)
        final = np.clip(np.ceil(values * n_bins / float(self._max[i])) - 1, 0, n_bins - 1)
        order = np.lexsort((slots["wid"][rows[r], c], slots["key"][rows[r], c], final))
        quotas = bin_quotas(self.settings.quantile(split), n_bins)
        taken = [0] * n_bins
        out: list[Example] = []
        for j in order:
            b = int(final[j])
            if taken[b] < quotas[b]:
                taken[b] += 1
                ex = self._example(
                    slots, int(rows[r[j]]), int(c[j]), (feature, split, "quantile", len(out))
                )
                ex.bin = b
                out.append(ex)
        return out


def _shifted(items: Items, offset: int) -> Items:
    """The same items with their bank references moved past another collector's."""
    return Items(items.feature, items.value, items.key, items.wid, items.wref + offset,
                 items.acts)
