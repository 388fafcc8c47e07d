"""Fixed-size stores of (feature, window) candidates: the collector's only growing-free state.

A store is rows of ``m`` slots that keep the items with the smallest scores; the collector keeps
one row per feature (top-k, random) or per fine bin (quantile reservoirs). Items move between
stores as flat bags (``Items``), so every update is a handful of vectorised torch ops.

Order: a row keeps the m items that are smallest by (score, window identity). The identity
(``wid``, see :mod:`autolabel.collect.keys`) is a pure function of the window, so which items a
row keeps depends only on the set of items offered to it, never on the order they came in:
that is what makes partial states from shards merge exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

_PAD_WID = 2**62  # table padding sorts after every real window identity (< 2**62)
_FIELDS = ("score", "value", "key", "feature", "wid", "wref")


@dataclass
class Items:
    """A flat bag of (feature, window) candidates travelling between stores."""

    feature: Tensor  # int64 [C]
    value: Tensor  # float32 [C], the window's max activation
    key: Tensor  # float64 [C], priority key
    wid: Tensor  # int64 [C], global window identity (ties break on it)
    wref: Tensor  # int64 [C], window reference into the collector's bank
    acts: Tensor | None  # float32 [C, W], compacted per-token activations

    def select(self, mask: Tensor) -> Items:
        """The items where ``mask`` is true (a boolean mask or an index tensor)."""
        acts = None if self.acts is None else self.acts[mask]
        return Items(self.feature[mask], self.value[mask], self.key[mask], self.wid[mask],
                     self.wref[mask], acts)

    def __len__(self) -> int:
        return int(self.feature.shape[0])


def cat_items(parts: Sequence[Items]) -> Items:
    """One bag from several (all with or all without per-token activations)."""
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    acts = None if parts[0].acts is None else torch.cat([p.acts for p in parts])  # type: ignore[misc]
    return Items(
        torch.cat([p.feature for p in parts]),
        torch.cat([p.value for p in parts]),
        torch.cat([p.key for p in parts]),
        torch.cat([p.wid for p in parts]),
        torch.cat([p.wref for p in parts]),
        acts,
    )


class Slots:
    """Rows of m slots holding the items with the smallest scores (unordered within a row).

    Only rows that receive a candidate are touched, and candidates that cannot beat a row's
    worst slot are rejected before anything is copied, so steady-state cost is tiny.
    """

    def __init__(self, rows: int, m: int, width: int | None) -> None:
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        self.m = m
        self.score = torch.full((rows, m), math.inf, dtype=torch.float64)
        self.value = torch.zeros((rows, m), dtype=torch.float32)
        self.key = torch.full((rows, m), math.inf, dtype=torch.float64)
        self.feature = torch.full((rows, m), -1, dtype=torch.int64)
        self.wid = torch.full((rows, m), -1, dtype=torch.int64)
        self.wref = torch.full((rows, m), -1, dtype=torch.int64)
        self.acts = None if width is None else torch.zeros((rows, m, width), dtype=torch.float32)

    def fields(self) -> list[Tensor]:
        """The per-slot fields in ``_FIELDS`` order (activations apart)."""
        return [self.score, self.value, self.key, self.feature, self.wid, self.wref]

    def tensors(self) -> list[Tensor]:
        base = self.fields()
        return base if self.acts is None else [*base, self.acts]

    def worst(self) -> tuple[Tensor, Tensor]:
        """Per row, the (score, wid) of the slot a candidate must beat to enter: the largest by
        (score, wid); (inf, -1) while a slot is free, (-inf, -1) for rows of no slots."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        rows = self.score.shape[0]
        if self.m == 0:
            return (torch.full((rows,), -math.inf, dtype=torch.float64),
                    torch.full((rows,), -1, dtype=torch.int64))
        score = self.score.amax(1)
        at_worst = self.score == score[:, None]
        return score, torch.where(at_worst, self.wid, -1).amax(1)

    def admits(self, rows: Tensor, score: Tensor, wid: Tensor) -> Tensor:
        """Which candidates beat their row's worst slot by (score, wid)."""
        w_score, w_wid = self.worst()
        return beats(score, wid, w_score[rows], w_wid[rows])

    def widen(self, width: int) -> None:
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        if self.acts is not None and self.acts.shape[2] < width:
            pad = width - self.acts.shape[2]
            self.acts = torch.nn.functional.pad(self.acts, (0, pad))

    def offer(self, rows: Tensor, score: Tensor, items: Items) -> Items:
        """Merge candidates into their rows; return every item that did not get (or keep) a slot."""
        losers = self._merge(rows, score, items, want_losers=True)
        assert losers is not None
        return losers

    def absorb(self, rows: Tensor, score: Tensor, items: Items) -> None:
        """Merge candidates into their rows; losers are dropped (nothing is copied for them)."""
        self._merge(rows, score, items, want_losers=False)

    def _merge(
        self, rows: Tensor, score: Tensor, items: Items, want_losers: bool
    ) -> Items | None:
        """Rows are unordered: winners overwrite only the slots they free, so a merge never
        moves the activations of items that stay. Ties go to the smaller window identity."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        admit = self.admits(rows, score, items.wid)
        losers = items.select(~admit) if want_losers else None
        if not bool(admit.any()):
            return losers
        rows, score, items = rows[admit], score[admit], items.select(admit)
        order = torch.sort(rows, stable=True).indices
        rows, score, items = rows[order], score[order], items.select(order)
        urows, group, counts = torch.unique_consecutive(rows, return_inverse=True,
                                                        return_counts=True)
        first = torch.cumsum(counts, 0) - counts  # each row's first candidate
        col = self.m + torch.arange(len(rows)) - first[group]
        tables = self._tables(urows, int(counts.max()), group, col, score, items)
        kept = self._kept(tables)
        freed_u, freed_j = (~kept[:, : self.m]).nonzero(as_tuple=True)  # row-major, so the
        new_u, new_c = kept[:, self.m :].nonzero(as_tuple=True)  # two lists pair up per row
        if losers is not None:
            lost = self._losers(tables, kept, urows, first, items)
            losers = cat_items([losers, lost])
        for dst, table in zip(self.fields(), tables, strict=True):
            dst[urows[freed_u], freed_j] = table[new_u, self.m + new_c]
        if self.acts is not None and items.acts is not None:
            self.acts[urows[freed_u], freed_j] = items.acts[first[new_u] + new_c]
        return losers

    def _kept(self, tables: list[Tensor]) -> Tensor:
        """[U, m + K] mask of the m best entries per row by (score, wid)."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        by_wid = torch.sort(tables[4], dim=1, stable=True).indices
        by_score = torch.sort(tables[0].gather(1, by_wid), dim=1, stable=True).indices
        best = by_wid.gather(1, by_score[:, : self.m])
        return torch.zeros_like(tables[0], dtype=torch.bool).scatter_(1, best, True)

    def _tables(
        self, urows: Tensor, width: int, group: Tensor, col: Tensor, score: Tensor, items: Items
    ) -> list[Tensor]:
        """[U, m + width] tables of the rows' current slots followed by their candidates.

        Only the small per-slot fields are tabled; per-token activations move by index. Padding
        sorts after everything (score inf, wid huge), and free slots (wid -1) before it."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        new = [score, items.value, items.key, items.feature, items.wid, items.wref]
        out = []
        for cur, cand in zip(self.fields(), new, strict=True):
            pad_value = math.inf if cur.dtype == torch.float64 else _PAD_WID
            extra = torch.full((len(urows), width), pad_value, dtype=cur.dtype)
            extra[group, col - self.m] = cand.to(cur.dtype)
            out.append(torch.cat([cur[urows], extra], dim=1))
        return out

    def _losers(
        self, tables: list[Tensor], kept: Tensor, urows: Tensor, first: Tensor, items: Items
    ) -> Items:
        """Real items that lost: evicted slots and rejected candidates (read before writing)."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        u, j = (~kept & torch.isfinite(tables[0])).nonzero(as_tuple=True)
        acts = None
        if self.acts is not None and items.acts is not None:
            acts = torch.empty((len(u), self.acts.shape[2]), dtype=torch.float32)
            old = j < self.m
            acts[old] = self.acts[urows[u[old]], j[old]]
            acts[~old] = items.acts[first[u[~old]] + j[~old] - self.m]
        fields = [t[u, j] for t in tables]
        return Items(fields[3], fields[1], fields[2], fields[4], fields[5], acts)

    def take_rows(self, rows: Tensor) -> Items:
        """Remove and return the items of ``rows`` (fine bins merging, states merging)."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        real = torch.isfinite(self.score[rows])
        acts = None if self.acts is None else self.acts[rows][real]
        out = Items(
            self.feature[rows][real],
            self.value[rows][real],
            self.key[rows][real],
            self.wid[rows][real],
            self.wref[rows][real],
            acts,
        )
        self.score[rows] = math.inf
        self.key[rows] = math.inf
        self.wid[rows] = -1
        self.wref[rows] = -1
        return out

    def take_all(self) -> Items:
        """Remove and return every item (a partial state being merged into another)."""
        import torch  # heavy (~3 s); a run with nothing to collect never loads it
        return self.take_rows(torch.arange(self.score.shape[0]))


def beats(score: Tensor, wid: Tensor, worst_score: Tensor, worst_wid: Tensor) -> Tensor:
    """(score, wid) < (worst_score, worst_wid) lexicographically, elementwise (broadcasts)."""
    return (score < worst_score) | ((score == worst_score) & (wid < worst_wid))


def ranked(slots: dict[str, np.ndarray], row: int) -> np.ndarray:
    """Occupied slots of a row, best first: by score, ties to the smaller window identity."""
    cols = np.lexsort((slots["wid"][row], slots["score"][row]))
    return cols[np.isfinite(slots["score"][row][cols])]


def numpy_slots(store: Slots) -> dict[str, np.ndarray]:
    """A store's tensors as numpy arrays by name, read once when results are built."""
    names = [*_FIELDS, "acts"]
    return {n: t.numpy() for n, t in zip(names, store.tensors(), strict=False)}
