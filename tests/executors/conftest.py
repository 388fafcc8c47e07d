"""A real local Ray cluster for the executor tests (two CPUs, like CI), and tiny artefacts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.tiny import tiny_corpus, tiny_model_dir, tiny_sae_dir


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """``ray.init(num_cpus=2)`` once per test session; executors reuse it (and leave it up)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tinyray")
    return {"model": tiny_model_dir(root / "model"), "sae": tiny_sae_dir(root / "sae"),
            "corpus": tiny_corpus(root / "corpus.txt", n_docs=120), "root": root}


def tiny_config_text(parts: dict[str, Path], **collect: Any) -> str:
    """A config for the tiny model, SAE and corpus; ``collect`` overrides [collect] keys."""
    keys = {"tokens": 4000, "features": "0:32", "batch_size": 4, **collect}
    body = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in keys.items())
    return (f'[subject]\nmodel = "{parts["model"]}"\nlayer = 2\ndevice = "cpu"\n'
            f'[sae]\nsae = "{parts["sae"]}"\n[corpus]\nsource = "{parts["corpus"]}"\n'
            f"window = 16\n[collect]\n{body}\n")
