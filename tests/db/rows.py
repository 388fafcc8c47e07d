"""Rows the database tests insert."""

from __future__ import annotations

from autolabel import db as dbm


def sae_row(session: object, name: str = "s", content_hash: str = "h" * 64) -> dbm.SAERecord:
    """A flushed SAE row (so its id is set) for tests that need a parent row."""
    sae = dbm.SAERecord(
        name=name, source=name, hook_name="blocks.6.hook_resid_post", d_in=8, d_sae=16,
        architecture="topk", content_hash=content_hash,
    )
    session.add(sae)  # type: ignore[attr-defined]
    session.flush()  # type: ignore[attr-defined]
    return sae
