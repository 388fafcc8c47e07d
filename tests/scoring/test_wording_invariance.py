"""Scores cannot be gamed by wording (issue 13.3): a label, the label with its words repeated,
and the label padded with the feature's top tokens in a loop score the same (within 0.01)
with every simulator the default path can pick — the embedding simulator and the in-process
local-logprob one — and with the LLM classifiers, because every scorer canonicalises the
explanation (:func:`autolabel.wording.canonical_explanation`) before a simulator sees it."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from autolabel.db import unpack_array
from autolabel.embed import HashEmbedder
from autolabel.examples import TextExample
from autolabel.llm import FakeClient
from autolabel.scoring import (
    DetectionScorer,
    EmbeddingSimulator,
    LocalLogprobSimulator,
    SimulationScorer,
)
from autolabel.wording import tokens
from tests.scoring.fakes import tiny_local_client
from tests.tiny import WORDS

# The default:5 pair: a generation loop against the token-statistics label.
LOOP = ("the 0th month of the month of the month of the month of the month of the month of "
        "the month of the month")
TOKEN_LABEL = 'tokens " with", " With"'
TOP_TOKENS = ["with", "With"]


def doubled(label: str) -> str:
    """Every word (or quoted literal) of ``label`` written twice."""
    parts = []
    for k, tok in enumerate(tokens(label)):
        parts.append((" " if k and tok.space_before else "") +
                     (f"{tok.text} {tok.text}" if tok.is_word else tok.text))
    return "".join(parts)


def variants(label: str, top: Sequence[str]) -> list[str]:
    """The label, repeated, word-doubled, and padded with a loop of its top tokens."""
    return [label, f"{label} {label}", " ".join([label] * 5), doubled(label),
            label + " " + " ".join(list(top) * 6)]


class Recorder:
    """A simulator that remembers what it was asked to simulate (and predicts by length)."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def predict(self, explanation: str, sequences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        self.seen.append(explanation)
        return [np.array([len(t) + len(explanation) % 3 for t in s], dtype=float)
                for s in sequences]


def tiny_sequences(n: int = 8) -> list[TextExample]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        tokens = [" " + str(w) for w in rng.choice(WORDS[:30], size=10)]
        acts = [3.0 if t.strip() in {"with", "march", "the"} else 0.0 for t in tokens]
        out.append(TextExample(tokens, acts, f"d{i}", kind="top" if i < 5 else "random",
                               split="test"))
    return out


def spread(values: Sequence[float | None]) -> float:
    assert all(v is not None for v in values), values
    return max(values) - min(values)  # type: ignore[type-var, operator]


@pytest.mark.parametrize("label,top", [(TOKEN_LABEL, TOP_TOKENS), (LOOP, ["month"]),
                                       ('the word "march" (any case)', ["march", "March"])])
def test_every_simulator_sees_one_wording(label: str, top: list[str]) -> None:
    recorder = Recorder()
    scorer = SimulationScorer(recorder)
    seqs = tiny_sequences()
    values = [scorer.score(v, seqs, 3.0).value for v in variants(label, top)]
    assert len(set(recorder.seen)) == 1, recorder.seen
    assert spread(values) == 0.0


@pytest.mark.parametrize("label,top", [(TOKEN_LABEL, TOP_TOKENS), (LOOP, ["month"])])
def test_embedding_simulator_is_invariant(label: str, top: list[str]) -> None:
    scorer = SimulationScorer(EmbeddingSimulator(HashEmbedder(dim=64)))
    seqs = tiny_sequences()
    assert spread([scorer.score(v, seqs, 3.0).value for v in variants(label, top)]) <= 0.01


def test_local_logprob_simulator_is_invariant() -> None:
    scorer = SimulationScorer(LocalLogprobSimulator(tiny_local_client()))
    seqs = tiny_sequences(4)
    values = [scorer.score(v, seqs, 3.0).value for v in variants(TOKEN_LABEL, TOP_TOKENS)[:3]]
    assert spread(values) <= 0.01


def test_detection_sees_one_wording() -> None:
    client = FakeClient(default="Example 1: 1\nExample 2: 0\nExample 3: 1\nExample 4: 0\n"
                        "Example 5: 1")
    scorer = DetectionScorer(client)
    seqs = tiny_sequences()
    for text in variants(TOKEN_LABEL, TOP_TOKENS):
        scorer.score(text, seqs, 3.0)
    prompts = {call.split("looks for: ", 1)[1].split("\n", 1)[0] for call in client.prompts}
    assert prompts == {TOKEN_LABEL}


PRISTINE = Path("/tmp/base_pristine.db")


def pristine_sequences(index: int) -> tuple[list[TextExample], float]:
    """A feature's test windows from the previous release's offline main job (read-only)."""
    from autolabel.subject import load_tokenizer

    with sqlite3.connect(f"file:{PRISTINE}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT e.split, e.kind, e.document_id, e.token_ids, e.activations, "
            "e.max_activation FROM examples e JOIN features f ON f.id = e.feature_id "
            'WHERE f."index" = ? ORDER BY e.split, e.kind, e.rank', (index,)).fetchall()
    tokenizer = load_tokenizer("gemma-3-270m")
    out, scale = [], 0.0
    for split, kind, doc, ids, acts, top in rows:
        if split == "train":
            scale = max(scale, top) if kind == "top" else scale
            continue
        tokens = [tokenizer.decode([i]) for i in unpack_array(ids, "int32").tolist()]
        out.append(TextExample(tokens, unpack_array(acts, "float32").tolist(), doc, kind, split))
    return out, scale


@pytest.mark.slow
@pytest.mark.skipif(not PRISTINE.exists(), reason="needs the previous release's database")
def test_default_5_pair_with_the_offline_embedder() -> None:
    """The issue's fixture on real data: default:5 with the offline default simulator
    (all-MiniLM-L6-v2 embeddings). Repetition earns nothing: the loop scores the same however
    long it runs, and the token label and all its padded forms score the same."""
    from autolabel.embed import get_embedder

    seqs, scale = pristine_sequences(5)
    scorer = SimulationScorer(EmbeddingSimulator(get_embedder("all-MiniLM-L6-v2")))
    token = [scorer.score(v, seqs, scale).value for v in variants(TOKEN_LABEL, TOP_TOKENS)]
    loop = [scorer.score(v, seqs, scale).value
            for v in (LOOP, "the 0th month of the month of the month",
                      LOOP + " of the month" * 10)]
    assert spread(token) <= 0.01
    assert spread(loop) <= 0.01
