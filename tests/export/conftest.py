"""The export tests' shared source: one database run through every stage, and its JSONL."""

from __future__ import annotations

from pathlib import Path

import pytest

from autolabel import db as dbm
from autolabel.config import load_config
from autolabel.embed import HashEmbedder, embed_missing
from autolabel.export import export_features
from autolabel.llm import FakeClient
from autolabel.pipeline import collect_stage, explain_stage, score_stage
from tests.tiny import tiny_corpus, tiny_model_dir, tiny_sae_dir


@pytest.fixture(scope="package")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[dbm.Database, Path]:
    """A database with collected, explained (incl. failures), scored and embedded features,
    and its JSONL export."""
    root = tmp_path_factory.mktemp("export")
    model, sae = tiny_model_dir(root / "model"), tiny_sae_dir(root / "sae")
    overrides = {"subject.model": str(model), "subject.layer": 2, "sae.sae": str(sae),
                 "corpus.source": str(tiny_corpus(root / "corpus.txt")),
                 "corpus.window": 16, "collect.tokens": 3000, "collect.features": "0:5",
                 "scoring.simulator": "embedding", "search.embedding_model": "hash",
                 "explain.explainers": ["tokens", "llm"]}
    config = load_config(overrides=overrides, environ={})
    database = dbm.open_database(str(root / "source.db"))
    collect_stage(config, database)
    client = FakeClient(default="the word 'the' and other short function words")
    client.enqueue("I cannot help with that.", "Token\t10\nToken\t3")
    explain_stage(config, database, client=client)
    score_stage(config, database)
    embed_missing(database, HashEmbedder(dim=8))
    out = root / "features.jsonl"
    export_features(database, sae_name=None, fmt="jsonl", out=out)
    return database, out
