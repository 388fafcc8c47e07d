"""``autolabel export``: pick the writer for a format and feed it the store's records."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from autolabel.db import Database
from autolabel.errors import InputError
from autolabel.export.neuronpedia import TokenizerLoader, write_neuronpedia
from autolabel.export.writers import write_csv, write_jsonl
from autolabel.store.records import Progress, exported_feature_ids, feature_records, no_progress

Writer = Callable[[Iterator[dict[str, Any]], Path | None], None]
WRITERS: dict[str, Writer] = {"jsonl": write_jsonl, "csv": write_csv}
FORMATS = ("neuronpedia", "jsonl", "csv")


def export_features(database: Database, *, sae_name: str | None, fmt: str, out: Path | None,
                    features: str | None = None, progress: Progress | None = None,
                    load_tokenizer: TokenizerLoader | None = None) -> int:
    """Write an SAE's collected features in ``fmt`` to ``out`` (stdout when None); returns
    how many features were exported.

    Only the Neuronpedia format shows token strings, so only it needs ``load_tokenizer``
    (model id -> tokenizer); the lossless formats keep token ids and never load one.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    ids = exported_feature_ids(database, sae_name, features)
    records = feature_records(database, ids, progress or no_progress)
    if fmt == "neuronpedia":
        if load_tokenizer is None:
            raise InputError("the neuronpedia format decodes tokens: pass load_tokenizer")
        write_neuronpedia(records, out, load_tokenizer)
    else:
        WRITERS[fmt](records, out)
    return len(ids)
