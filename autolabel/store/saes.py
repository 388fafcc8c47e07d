"""SAE rows: register an SAE by its weights hash, find one by name, id or hash prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from autolabel.db import SAERecord
from autolabel.errors import NotFoundError


class SAEIdentity(Protocol):
    """What the store needs to know of a loaded SAE (``saes.LoadedSAE`` fits)."""

    source: str
    release: str | None
    sae_id: str | None
    path: Path | None
    model_id: str | None
    hook_name: str
    d_in: int
    d_sae: int
    architecture: str
    content_hash: str


def sae_name(sae: SAEIdentity) -> str:
    """A short, human-typable handle for an SAE (used as ``SAE`` in ``SAE:IDX``)."""
    if sae.release and sae.sae_id:
        return f"{sae.release}:{sae.sae_id}"
    if sae.source == "default" or sae.path is None:
        return sae.source
    return sae.path.name


def register_sae(session: Session, sae: SAEIdentity, layer: int | None,
                 metrics: dict[str, Any] | None = None) -> SAERecord:
    """Insert the SAE if its weights hash is new; return the existing row otherwise."""
    found = session.scalar(select(SAERecord).where(SAERecord.content_hash == sae.content_hash))
    if found is not None:
        if metrics and not found.metrics:
            found.metrics = metrics
        return found
    name = sae_name(sae)
    if session.scalar(select(SAERecord.id).where(SAERecord.name == name)) is not None:
        name = f"{name}@{sae.content_hash[:8]}"  # same handle, different weights (retrained)
    record = SAERecord(
        name=name, source=sae.source, release=sae.release, sae_id=sae.sae_id,
        path=str(sae.path) if sae.path else None, model_id=sae.model_id,
        hook_name=sae.hook_name, layer=layer, d_in=sae.d_in, d_sae=sae.d_sae,
        architecture=sae.architecture, content_hash=sae.content_hash, metrics=metrics,
    )
    session.add(record)
    session.flush()
    return record


def find_sae(session: Session, name: str | None) -> SAERecord:
    """Look an SAE up by name, id or hash prefix; with no name, the only (or newest) one."""
    if not name:
        sae = session.scalar(select(SAERecord).order_by(SAERecord.id.desc()))
        if sae is None:
            raise NotFoundError("no SAE in the database yet; run `autolabel collect` first")
        return sae
    query = select(SAERecord).where(
        (SAERecord.name == name) | (SAERecord.content_hash.startswith(name))
    )
    if name.isdigit():
        query = select(SAERecord).where(SAERecord.id == int(name))
    sae = session.scalar(query)
    if sae is None:
        known = ", ".join(session.scalars(select(SAERecord.name)).all()) or "none"
        raise NotFoundError(
            f"no SAE named {name!r} (known: {known}); see `autolabel features list`"
        )
    return sae




def find_sae_by_hash(session: Session, content_hash: str) -> SAERecord | None:
    """The SAE row with exactly these weights, if it was ever registered."""
    return session.scalar(select(SAERecord).where(SAERecord.content_hash == content_hash))
