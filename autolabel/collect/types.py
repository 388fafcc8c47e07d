"""What a collection pass takes and returns: settings, per-feature results, feature checks.

Kept apart from the stores and the driver so that callers (the pipeline, executors that merge
partial states from shards) can name these types without pulling in the collector's machinery.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from autolabel.errors import InputError
from autolabel.examples import Example

SPLITS = ("train", "validation", "test")
# Splits whose silent windows are kept as random negatives: scorers use validation negatives to
# choose among candidate explanations and test negatives to report the chosen one's score.
RANDOM_SPLITS = ("validation", "test")
# Fixed log-spaced edges of the firing-activation histogram: 1e-3 … 1e5, 4 bins per decade.
HISTOGRAM_EDGES: list[float] = [10.0 ** (-3 + i / 4) for i in range(33)]


@dataclass(frozen=True)
class CollectSettings:
    """How many examples of each kind to keep per feature and split.

    ``random`` is per split in ``RANDOM_SPLITS``. ``batch_size`` only says how windows are
    grouped for the model: results never depend on it.
    """

    train_top: int = 20
    train_quantile: int = 10
    validation_top: int = 10
    validation_quantile: int = 10
    test_top: int = 10
    test_quantile: int = 10
    random: int = 20
    n_bins: int = 5
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        counts = [self.top(s) for s in SPLITS] + [self.quantile(s) for s in SPLITS]
        if min(*counts, self.random) < 0:
            raise InputError("example counts must be >= 0; fix the collect settings")
        if self.n_bins < 1 or self.batch_size < 1:
            raise InputError("n_bins and batch_size must be >= 1; fix the collect settings")

    def top(self, split: str) -> int:
        """Top examples kept for ``split``."""
        return int(getattr(self, f"{split}_top"))

    def quantile(self, split: str) -> int:
        """Quantile examples kept for ``split``."""
        return int(getattr(self, f"{split}_quantile"))

    def sampling(self) -> tuple[int, ...]:
        """Everything that decides which examples are kept (``batch_size`` does not)."""
        counts = [(self.top(s), self.quantile(s)) for s in SPLITS]
        return (*[n for pair in counts for n in pair], self.random, self.n_bins, self.seed)


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
