"""Streaming example collection and feature statistics: one pass over the corpus.

The corpus can be far larger than memory, so every per-feature quantity is a fixed-size state
tensor updated with vectorised torch ops per batch (see :mod:`autolabel.collect.collector` for
what is kept and how the quantile sample stays exact).

Sampling depends only on the seed, the feature and the window's identity (document, start), so
results never depend on batch layout, feature grouping or sharding, and partial states from
shards merge exactly (``ExampleCollector.merge``).

Modules: :mod:`~autolabel.collect.types` (settings, results, feature checks),
:mod:`~autolabel.collect.keys` (priority keys and window identities),
:mod:`~autolabel.collect.slots` (the fixed-size stores), :mod:`~autolabel.collect.collector`
(``ExampleCollector``), :mod:`~autolabel.collect.stream` (``encode_batch``, ``collect``,
``collect_state`` and the protocols their inputs satisfy). The public names are re-exported
here.
"""

from __future__ import annotations

from autolabel.collect.collector import ExampleCollector, bin_quotas
from autolabel.collect.keys import priority_key_reference, priority_keys, window_ids
from autolabel.collect.stream import (
    SAELike,
    SubjectLike,
    WindowBatchLike,
    collect,
    collect_state,
    encode_batch,
)
from autolabel.collect.types import (
    HISTOGRAM_EDGES,
    RANDOM_SPLITS,
    SPLITS,
    CollectSettings,
    FeatureResult,
    check_features,
)

__all__ = [
    "HISTOGRAM_EDGES",
    "RANDOM_SPLITS",
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
    "collect_state",
    "encode_batch",
    "priority_key_reference",
    "priority_keys",
    "window_ids",
]
