"""Links between features: nearest decoder directions and nearest labels.

Decoder directions are read straight from the SAE's ``sae_weights.safetensors`` (sae-lens's
on-disk format, ``W_dec`` of shape [d_sae, d_in]) with safetensors' numpy reader: no sae-lens
import (~10 s) in a web server. Rows are L2-normalised once per SAE and kept; an SAE whose
weights are not on this machine (a pretrained one never downloaded) simply has no such links.
Nearest labels come from the vector index, as semantic search does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autolabel.db import Database
from autolabel.search import OpenIndex, open_index
from autolabel.store.search import SearchFilters, live_candidates

log = logging.getLogger("autolabel.serve")

WEIGHTS = "sae_weights.safetensors"
MAX_DECODER_BYTES = 2 << 30  # larger decoders are not loaded into a web server


@dataclass(frozen=True)
class Neighbour:
    """Another feature and how close it is (cosine)."""

    feature_id: int | None  # set for label neighbours (found through their explanation)
    index: int
    cosine: float


class DecoderCache:
    """Normalised decoder matrices by SAE path, loaded on first use (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._matrices: dict[str, np.ndarray | None] = {}

    def matrix(self, sae_path: str | None) -> np.ndarray | None:
        """[d_sae, d_in] unit rows, or None when the weights are not available here."""
        if not sae_path:
            return None
        with self._lock:
            if sae_path not in self._matrices:
                self._matrices[sae_path] = _load_decoder(Path(sae_path) / WEIGHTS)
            return self._matrices[sae_path]

    def nearest(self, sae_path: str | None, index: int, among: Sequence[int],
                k: int = 8) -> list[Neighbour]:
        """The ``k`` features among ``among`` (the collected ones: those have pages) whose
        decoder directions are closest to feature ``index``'s."""
        w = self.matrix(sae_path)
        if w is None or not 0 <= index < w.shape[0]:
            return []
        rows = np.asarray([i for i in among if 0 <= i < w.shape[0] and i != index],
                          dtype=np.int64)
        if rows.size == 0:
            return []
        sims = w[rows] @ w[index]
        m = min(k, rows.size)
        top = np.argpartition(-sims, m - 1)[:m] if m < rows.size else np.arange(rows.size)
        top = top[np.argsort(-sims[top])]
        return [Neighbour(None, int(rows[i]), float(sims[i])) for i in top]


def _load_decoder(path: Path) -> np.ndarray | None:
    """``W_dec`` from a safetensors file, rows normalised; None if missing or too large."""
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open  # small; no torch needed for the numpy reader

        with safe_open(str(path), framework="numpy") as fh:
            if "W_dec" not in fh.keys():  # noqa: SIM118 (safe_open has no __contains__)
                return None
            shape = fh.get_slice("W_dec").get_shape()
            if int(np.prod(shape)) * 4 > MAX_DECODER_BYTES:
                log.info("decoder of %s too large to load for neighbour links", path)
                return None
            w = np.asarray(fh.get_tensor("W_dec"), dtype=np.float32)
    except (OSError, ValueError) as exc:
        log.warning("cannot read decoder weights %s: %s", path, exc)
        return None
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(w / norms)


def nearest_labels(database: Database, model: str, vector: bytes | None, feature_id: int,
                   k: int = 8) -> list[Neighbour]:
    """Features whose explanations are closest to ``vector`` (one per feature, not this one)."""
    if vector is None:
        return []
    q = np.frombuffer(vector, dtype="<f4")
    with database.engine.connect() as conn:
        index: OpenIndex = open_index(database, model, conn)
        found = index.search(q, 4 * k + 8)
        live = live_candidates(conn, model, [key for key, _ in found], SearchFilters())
    out: list[Neighbour] = []
    seen = {feature_id}
    for key, _ in found:
        hit = live.get(key)
        if hit is None or hit.feature_id in seen:
            continue
        seen.add(hit.feature_id)
        cosine = float(np.frombuffer(hit.vector, dtype="<f4") @ q)
        out.append(Neighbour(hit.feature_id, -1, cosine))
    out.sort(key=lambda n: -n.cosine)
    return out[:k]
