"""The score stage through the one scorer interface: with ``scoring.simulator = "auto"`` and a
cached sanity verdict, re-scoring already-scored explanations loads neither the LLM nor the
embedding model (nor the tokenizer), whichever simulator the verdict chose."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autolabel import db as dbm
from autolabel import loading
from autolabel.config import Config, load_config
from autolabel.loading import RunContext
from autolabel.pipeline import collect_stage, explain_stage, score_stage
from autolabel.scoring import sanity
from autolabel.scoring.local_simulator import LocalLogprobSimulator
from autolabel.scoring.types import SanityReport
from tests.scoring.fakes import CountingBackend, tiny_local_client
from tests.tiny import tiny_corpus, tiny_model_dir, tiny_sae_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, dbm.Database, Path]:
    root = tmp_path_factory.mktemp("score")
    model, sae = tiny_model_dir(root / "model"), tiny_sae_dir(root / "sae")
    overrides = {"subject.model": str(model), "subject.layer": 2, "sae.sae": str(sae),
                 "corpus.source": str(tiny_corpus(root / "corpus.txt")), "corpus.window": 16,
                 "collect.tokens": 3000, "collect.features": "0:6",
                 "llm.provider": "local", "llm.model": str(model),
                 "scoring.simulator": "auto", "search.embedding_model": "hash",
                 "explain.explainers": ["tokens"]}
    config = load_config(overrides=overrides, environ={})
    database = dbm.open_database(str(root / "score.db"))
    collect_stage(config, database)
    explain_stage(config, database)
    return config, database, model


class _NoEmbedder:
    """Named like the hash embedder (so scores match), but must never embed."""

    name = "hash-bow"
    dim = 4

    def embed(self, texts: object) -> np.ndarray:
        raise AssertionError("the embedding model was loaded")


@pytest.mark.parametrize("passed", [True, False])
def test_rescoring_with_auto_loads_neither_llm_nor_embedder(
        setup: tuple[Config, dbm.Database, Path], passed: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    config, database, model = setup
    working = CountingBackend(str(model), real=tiny_local_client())
    llm_name = f"llm-logprob:{model}"
    key = sanity.sanity_key(LocalLogprobSimulator(working))  # type: ignore[arg-type]
    sanity.store_report(key, SanityReport(llm_name, 1.0, 1.0, passed))

    first = score_stage(config, database,
                        ctx=RunContext(config, database, llm_factory=lambda ctx: working))
    assert first.scored > 0 and first.skipped == 0
    assert first.simulator == (llm_name if passed else "embedding:hash-bow")
    assert (working.loads > 0) is passed  # only the LLM simulator reaches the model

    sanity._SANITY_CACHE.clear()  # as in a new process: the verdict comes from disk
    monkeypatch.setattr(loading, "get_embedder", lambda name: _NoEmbedder())
    ctx = RunContext(config, database)  # the real (lazy) recorded local client
    again = score_stage(config, database, ctx=ctx)
    assert (again.scored, again.skipped) == (0, first.scored)
    assert again.simulator == first.simulator
    assert again.sanity is not None and again.sanity["passed"] is passed
    backend = ctx.llm.local_backend()
    assert backend is not None and not backend.loaded
    assert not [x for x in ctx.loaded if x.startswith(("tokenizer", "subject", "sae"))]
