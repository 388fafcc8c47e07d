"""Arrays as blobs: token ids, activations and embeddings stored as fixed-dtype raw bytes.

Raw little-endian bytes (no pickle) are compact, safe to load and read the same on every
machine and database backend.
"""

from __future__ import annotations

import numpy as np


def pack_array(values: np.ndarray, dtype: str) -> bytes:
    """Store an array as little-endian raw bytes of a fixed dtype (compact, no pickle)."""
    return np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def unpack_array(blob: bytes, dtype: str) -> np.ndarray:
    """Inverse of :func:`pack_array` (returns a writable native-endian copy)."""
    return np.frombuffer(blob, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
