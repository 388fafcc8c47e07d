"""What a collection pass takes and returns: settings, per-feature results, feature checks.

Kept apart from the stores and the driver so that callers (the pipeline, workers that will
merge partial states) can name these types without pulling in the collector's machinery.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from autolabel.errors import InputError
from autolabel.examples import Example

SPLITS = ("train", "test")
# Fixed log-spaced edges of the firing-activation histogram: 1e-3 … 1e5, 4 bins per decade.
HISTOGRAM_EDGES: list[float] = [10.0 ** (-3 + i / 4) for i in range(33)]


@dataclass(frozen=True)
class CollectSettings:
    """How many examples of each kind to keep per feature; ``batch_size`` is for batching."""

    train_top: int = 20
    train_quantile: int = 10
    test_top: int = 10
    test_quantile: int = 10
    random: int = 20
    n_bins: int = 5
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        counts = (self.train_top, self.train_quantile, self.test_top, self.test_quantile)
        if min(*counts, self.random) < 0:
            raise InputError("example counts must be >= 0; fix the collect settings")
        if self.n_bins < 1 or self.batch_size < 1:
            raise InputError("n_bins and batch_size must be >= 1; fix the collect settings")

    def top(self, split: str) -> int:
        return self.train_top if split == "train" else self.test_top

    def quantile(self, split: str) -> int:
        return self.train_quantile if split == "train" else self.test_quantile


@dataclass
class FeatureResult:
    """Statistics and examples of one SAE latent (``feature`` is the latent index)."""

    feature: int
    n_tokens: int
    n_firing: int
    density: float
    max_activation: float
    mean_activation: float
    mean_firing_activation: float
    histogram: list[int]
    histogram_edges: list[float]
    examples: list[Example] = field(default_factory=list)


def check_features(features: Sequence[int], d_sae: int | None) -> None:
    """Feature indices must be distinct SAE latents; say which ones are not."""
    if not len(features):
        raise InputError("no features selected; pass at least one SAE latent index")
    bad = [f for f in features if f < 0 or (d_sae is not None and f >= d_sae)]
    if bad:
        limit = f"< d_sae={d_sae}" if d_sae is not None else ">= 0"
        raise InputError(f"feature indices {bad[:5]} are out of range; use 0 <= index {limit}")
    if len(set(features)) != len(features):
        dup = sorted(f for f, n in Counter(features).items() if n > 1)
        raise InputError(f"feature indices {dup[:5]} are repeated; list each feature once")
