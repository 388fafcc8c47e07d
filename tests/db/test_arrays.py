"""Arrays as blobs: exact round trips at a fixed dtype."""

from __future__ import annotations

import numpy as np

from autolabel import db as dbm


def test_array_blobs_round_trip() -> None:
    acts = np.array([0.0, 1.5, 1e-7, 3e4], dtype=np.float32)
    blob = dbm.pack_array(acts, "float32")
    assert len(blob) == 16
    np.testing.assert_array_equal(dbm.unpack_array(blob, "float32"), acts)
    ids = np.array([2, 262143], dtype=np.int64)
    np.testing.assert_array_equal(dbm.unpack_array(dbm.pack_array(ids, "int32"), "int32"), ids)
