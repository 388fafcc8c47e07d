"""The light query path: all-MiniLM-L6-v2 as a numpy forward equals sentence-transformers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from autolabel import embed as embed_module
from autolabel.embed import LocalEmbedder, _erf

TEXTS = [
    "months", "names of months such as January, February and March", "", "a" * 3000,
    "Ünïcödé 😀 <script>alert(1)</script>", "the 0th month of the month of the month " * 40,
    "citations of court cases, e.g. Smith v. Jones, 410 U.S. 113",
]


def test_erf_against_the_standard_library() -> None:
    import math

    xs = np.linspace(-6, 6, 2001)
    assert np.abs(_erf(xs) - np.array([math.erf(x) for x in xs])).max() < 2e-7


def test_small_batches_do_not_import_sentence_transformers() -> None:
    """A query in a fresh process: vectors of unit length, and neither sentence-transformers
    nor torch imported (they cost seconds; a CLI search must not pay for them)."""
    code = ("import sys, numpy as np; from autolabel.embed import LocalEmbedder; "
            "e = LocalEmbedder(); v = e.embed(['gender pronouns', 'months']); "
            "assert v.shape == (2, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)"
            "; assert e.loaded; "
            "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_forward_stays_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every layer works in float32, as torch does: a numpy float64 scalar anywhere in the
    forward (``np.sqrt(2.0)``) silently promoted it all to float64, 3x slower."""
    seen: set[np.dtype] = set()
    layer_norm = embed_module._layer_norm

    def spy(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        seen.add(x.dtype)
        return layer_norm(x, weight, bias)

    monkeypatch.setattr(embed_module, "_layer_norm", spy)
    out = embed_module._light_model().embed(["months of the year"])
    assert seen == {np.dtype(np.float32)} and out.dtype == np.float32


@pytest.mark.slow
def test_light_path_equals_sentence_transformers() -> None:
    light = embed_module._light_model().embed(TEXTS)
    model = embed_module._load_local_model()
    reference = model.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True,
                             batch_size=64, show_progress_bar=False)
    assert light.dtype == np.float32 and light.shape == reference.shape
    assert np.abs(light - reference).max() < 1e-5
    # With sentence-transformers loaded, small batches use it (the same vectors either way).
    both = LocalEmbedder().embed(TEXTS[:2])
    assert np.abs(both - light[:2]).max() < 1e-5
