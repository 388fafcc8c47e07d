"""Streaming example collection and feature statistics: one pass over the corpus.

The corpus can be far larger than memory, so every per-feature quantity is a fixed-size state
tensor updated with vectorised torch ops per batch (see :mod:`autolabel.collect.collector` for
what is kept and how the quantile sample stays exact).

Modules: :mod:`~autolabel.collect.types` (settings, results, feature checks),
:mod:`~autolabel.collect.slots` (the fixed-size stores), :mod:`~autolabel.collect.collector`
(``ExampleCollector``), :mod:`~autolabel.collect.stream` (``encode_batch``, ``collect`` and the
protocols its inputs satisfy). The public names are re-exported here.
"""

from __future__ import annotations

from autolabel.collect.collector import ExampleCollector, bin_quotas, draw_keys
from autolabel.collect.stream import (
    SAELike,
    SubjectLike,
    WindowBatchLike,
    collect,
    encode_batch,
)
from autolabel.collect.types import (
    HISTOGRAM_EDGES,
    SPLITS,
    CollectSettings,
    FeatureResult,
    check_features,
)

__all__ = [
    "HISTOGRAM_EDGES",
    "SPLITS",
    "CollectSettings",
    "ExampleCollector",
    "FeatureResult",
    "SAELike",
    "SubjectLike",
    "WindowBatchLike",
    "bin_quotas",
    "check_features",
    "collect",
    "draw_keys",
    "encode_batch",
]
