"""Priority keys and window identities that depend on *what* a window is, never on *when* it came.

Sampling (quantile and random examples) keeps, per reservoir, the windows with the smallest
priority keys. If keys came from a generator they would depend on how windows were batched, how
features were grouped and which worker saw a window; here every key is a pure function of

    (seed, feature index, document id, window start)

computed with splitmix64 (a counter-based mixer: Steele et al. 2014) on a stable 64-bit
document hash, vectorised in torch. The same config therefore samples the same windows whatever
the batch size, the feature grouping, the worker count or the executor, and partial collector
states from shards merge exactly ("keep the smallest keys" of the union is the sample of the
union). Ties, in keys or in top-k values, break on the window identity (another pure function
of document and start), not on arrival order.

torch has no unsigned 64-bit arithmetic, so values live in int64 with wrapping multiplication
(two's complement, as every torch backend implements it) and logical right shifts done as an
arithmetic shift plus a mask. ``priority_key_reference`` is the same function in plain Python
integers; a test checks that both agree bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_FEATURE_SALT = 0xD1B54A32D192ED03
WID_BITS = 62  # window identities are in [0, 2**62): below the slots' padding sentinel


def _signed(value: int) -> int:
    """An unsigned 64-bit constant as the int64 torch stores."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _shr(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 values viewed as unsigned."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: Tensor) -> Tensor:
    """splitmix64's finaliser applied elementwise to int64 tensors (wrapping arithmetic)."""
    z = x + _signed(_GOLDEN)
    z = (z ^ _shr(z, 30)) * _signed(_MIX1)
    z = (z ^ _shr(z, 27)) * _signed(_MIX2)
    return z ^ _shr(z, 31)


@lru_cache(maxsize=65_536)
def document_hash(document_id: str) -> int:
    """A stable 64-bit hash of a document id (sha256, never Python's salted ``hash()``)."""
    return int.from_bytes(hashlib.sha256(document_id.encode()).digest()[:8], "big")


def window_ids(document_ids: Sequence[str], starts: Sequence[int]) -> Tensor:
    """One int64 identity per window in [0, 2**62), a pure function of (document, start)."""
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    docs = torch.tensor([_signed(document_hash(str(d))) for d in document_ids], dtype=torch.int64)
    start = torch.tensor([int(s) for s in starts], dtype=torch.int64)
    mixed = splitmix64(docs ^ splitmix64(start))
    return _shr(mixed, 64 - WID_BITS)


def priority_keys(seed: int, features: Tensor, wids: Tensor) -> Tensor:
    """[windows, features] float64 keys in [0, 1): uniform, independent per (window, feature).

    ``features`` are SAE latent indices (not column positions), so a feature's keys are the
    same whichever other features are collected beside it.
    """
    import torch  # heavy (~3 s); a run with nothing to collect never loads it
    salt = splitmix64(torch.tensor([_signed(int(seed) * _FEATURE_SALT)], dtype=torch.int64))
    per_feature = splitmix64(features.to(torch.int64) ^ salt)
    h = splitmix64(wids.to(torch.int64)[:, None] ^ per_feature[None, :])
    return _shr(h, 11).double() * 2.0**-53


def _splitmix64_int(x: int) -> int:
    z = (x + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def window_id_reference(document_id: str, start: int) -> int:
    """``window_ids`` for one window, in plain Python integers."""
    mixed = _splitmix64_int(document_hash(document_id) ^ _splitmix64_int(start & _MASK64))
    return mixed >> (64 - WID_BITS)


def priority_key_reference(seed: int, feature: int, document_id: str, start: int) -> float:
    """``priority_keys`` for one (window, feature), in plain Python integers."""
    salt = _splitmix64_int((int(seed) * _FEATURE_SALT) & _MASK64)
    per_feature = _splitmix64_int((feature & _MASK64) ^ salt)
    h = _splitmix64_int(window_id_reference(document_id, start) ^ per_feature)
    return float(h >> 11) * 2.0**-53
