"""Best-of-k chooses on validation and reports test (issue 13.2): the winner's-curse check.

k = 8 candidates of random text explain a feature whose activations are noise, so every
candidate's true score is 0 and validation and test noise are independent. Chosen on
validation, the reported test score must be indistinguishable from a single random
candidate's; chosen on test (what autolabel did before), it is the maximum of 8 noisy numbers
and inflated — and the same statistic must say so, or it could not catch the bug.

The scores go through the real score stage's per-explanation step (validation score, test
score, floor, trust, stored in SQLite) and the real choice (``mark_best``/``feature_labels``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from autolabel import db as dbm
from autolabel.embed import HashEmbedder
from autolabel.examples import TextExample
from autolabel.pipeline.score import HeldOut, _score_one, _Tally
from autolabel.scoring import EmbeddingSimulator, SimulationScorer
from autolabel.scoring.trust import TrustSettings
from autolabel.store.labels import feature_labels
from autolabel.store.scores import mark_best
from tests.db.rows import sae_row

K, TRIALS = 8, 80
VOCAB = [f"w{i}" for i in range(60)]


def noise_split(rng: np.random.Generator, split: str, trial: int) -> list[TextExample]:
    """Sequences whose activations are independent of their tokens (documents per split)."""
    out = []
    for j in range(10):
        tokens = [str(t) for t in rng.choice(VOCAB, size=8)]
        acts = (rng.random(8) < 0.3) * rng.exponential(3.0, size=8)
        out.append(TextExample(tokens, [float(a) for a in acts], f"{split}-{trial}-{j}",
                               kind="top" if j < 6 else "random", split=split))
    return out


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dbm.Database, list[int]]]:
    """TRIALS features × K random-text candidates, scored on validation and test."""
    database = dbm.open_database(f"sqlite:///{tmp_path_factory.mktemp('wc') / 'wc.db'}")
    rng = np.random.default_rng(13)
    scorer = SimulationScorer(EmbeddingSimulator(HashEmbedder(dim=32)))
    settings, tally = TrustSettings(n_null=16, n_boot=200), _Tally()
    fids = []
    with database.session() as s:
        sae = sae_row(s)
        feats = [dbm.Feature(sae_id=sae.id, index=i) for i in range(TRIALS)]
        s.add_all(feats)
        s.flush()
        for f in feats:
            s.add_all(dbm.Explanation(
                feature_id=f.id, explainer="llm", llm_model="m", prompt_hash="p",
                candidate=c, status="ok", text=" ".join(rng.choice(VOCAB, size=3)))
                for c in range(K))
        fids = [f.id for f in feats]
    with database.session() as s:
        expls = list(s.query(dbm.Explanation).order_by(dbm.Explanation.id))
    for trial, fid in enumerate(fids):
        held = HeldOut(noise_split(rng, "validation", trial), noise_split(rng, "test", trial),
                       scale=9.0)
        for expl in (e for e in expls if e.feature_id == fid):
            _score_one(database, scorer, expl, held, None, "words about cooking", None, tally,
                       settings)
    with database.session() as s:
        mark_best(s, fids)
    yield database, fids
    database.close()


def candidate_scores(database: dbm.Database, fids: list[int]) -> dict[int, list[Any]]:
    with database.session() as s:
        rows = s.query(dbm.Explanation.feature_id, dbm.Explanation.candidate, dbm.Score.value,
                       dbm.Score.validation_value).join(
            dbm.Score, dbm.Score.explanation_id == dbm.Explanation.id).all()
    out: dict[int, list[Any]] = {fid: [None] * K for fid in fids}
    for fid, cand, value, validation in rows:
        out[fid][cand] = (value, validation)
    return out


def z_score(diffs: list[float]) -> float:
    """How many standard errors the mean difference is from 0."""
    arr = np.asarray(diffs)
    return float(arr.mean() / (arr.std(ddof=1) / math.sqrt(len(arr))))


def test_chosen_on_validation_reports_an_unbiased_test_score(
        scored: tuple[dbm.Database, list[int]]) -> None:
    database, fids = scored
    scores = candidate_scores(database, fids)
    with database.session() as s:
        labels = feature_labels(s, fids)
    assert all(lab.selected_on == "validation" for lab in labels.values())
    # A random text can share no hash bucket with a split's tokens: a constant prediction, a
    # degenerate (valueless) score that cannot be chosen. Compare on complete features.
    usable = [f for f in fids if all(None not in pair for pair in scores[f])]
    assert len(usable) >= 0.9 * len(fids)
    for fid in usable:  # the label is the validation argmax, reported on test
        lab, pairs = labels[fid], scores[fid]
        assert lab.validation_score == max(v for _t, v in pairs)
        assert (lab.score, lab.validation_score) in pairs
    # one random candidate per feature: candidate 0 (candidates are exchangeable)
    chosen = [labels[f].score - scores[f][0][0] for f in usable]
    on_test = [max(t for t, _ in scores[f]) - scores[f][0][0] for f in usable]
    assert abs(z_score(chosen)) < 3.0, "choosing on validation inflated the test score"
    assert z_score(on_test) > 6.0, "the check cannot see the winner's curse of choosing on test"
    assert np.mean(on_test) > 5 * abs(np.mean(chosen))


def test_every_candidate_has_both_scores_and_a_verdict(
        scored: tuple[dbm.Database, list[int]]) -> None:
    database, fids = scored
    with database.session() as s:
        rows = s.query(dbm.Score).all()
    assert len(rows) == K * len(fids)
    complete = [r for r in rows if r.validation_value is not None and r.value is not None]
    assert len(complete) >= 0.95 * len(rows)
    assert all(r.verdict in {"trusted", "weak", "at_floor", "unscored"} for r in rows)
    assert all(r.verdict != "unscored" for r in rows if r.value is not None)
    # noise explained by random text: at most a chance share is trusted
    assert sum(r.verdict == "trusted" for r in rows) / len(rows) < 0.1
