"""What a collection stored, by natural identity, so two databases compare with ``==``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from autolabel import db as dbm


def collected(db_path: Path) -> dict[str, Any]:
    """Features' statistics and every example (arrays as bytes), exactly; no ids or times."""
    database = dbm.open_database(str(db_path))
    with database.session() as s:
        feats = {f.id: f for f in s.scalars(select(dbm.Feature))}
        return {
            "features": sorted((f.index, f.n_tokens, f.n_firing, f.density, f.max_activation,
                                f.mean_activation, f.mean_firing_activation,
                                str(f.histogram)) for f in feats.values()),
            "examples": sorted((feats[e.feature_id].index, e.split, e.kind, e.bin, e.rank,
                                e.document_id, e.start, e.token_ids, e.activations,
                                e.max_activation) for e in s.scalars(select(dbm.Example))),
        }


def sae_rows(db_path: Path) -> int:
    """How many SAEs the database has registered."""
    database = dbm.open_database(str(db_path))
    with database.session() as s:
        return len(list(s.scalars(select(dbm.SAERecord))))
