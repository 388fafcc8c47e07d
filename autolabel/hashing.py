"""Content hashes: the keys of work already done, and the provenance of files.

At the bottom of the import layers so that model, SAE and corpus loaders can name what they
loaded without depending on the database.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def content_hash(*parts: object) -> str:
    """Stable sha256 over the repr of the parts (used for keys of work already done)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file read in 1 MiB chunks (provenance of weights, GGUFs, data files)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
