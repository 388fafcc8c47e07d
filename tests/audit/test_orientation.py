"""Tier 2 does not depend on row order: a feature that fires on one group's terms only is
flagged on built-in, CrowS-Pairs and WinoBias pairs alike, and swapping the two sentences of
random rows changes no flag (issue 15)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autolabel.audit.activations import pair_activations
from autolabel.audit.orient import orient_pairs, own_words, pair_sign
from autolabel.audit.pairs import Pair, builtin_pairs, load_pair_sets
from autolabel.audit.run import run_audit
from autolabel.audit.stats import paired_stats
from autolabel.audit.taxonomy import load_taxonomy
from autolabel.config import Config
from autolabel.db import Feature, Flag, open_database
from tests.audit.bias_fixtures import (
    FEMALE_WORDS,
    fixture_texts,
    shuffle_crows,
    shuffle_winobias,
    write_crows,
    write_winobias,
)
from tests.audit.fakes import audit_ctx, planted_sae, tiny_audit_subject

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "bias"
CONFIG = Config.model_validate({"audit": {"n_boot": 200, "n_random": 40}})
TAX = load_taxonomy()


def _swap(p: Pair) -> Pair:
    """The same pair with its two sentences in the other order."""
    return dataclasses.replace(p, text_a=p.text_b, text_b=p.text_a, span_a=p.span_b,
                               span_b=p.span_a, group_a=p.group_b, group_b=p.group_a,
                               parts_a=p.parts_b, parts_b=p.parts_a)


def test_orientation_flips_sign_when_a_pair_is_swapped(tmp_path: Path) -> None:
    pairs = builtin_pairs() + load_pair_sets(f"crows:{write_crows(tmp_path / 'c.csv')},"
                                             f"winobias:{write_winobias(tmp_path / 'w')}")[0]
    cats = {c.name: c for c in TAX.categories}
    for p in pairs:
        if p.category in cats:
            assert pair_sign(_swap(p), cats[p.category], TAX.stoplist) == -pair_sign(
                p, cats[p.category], TAX.stoplist), p
    signs = orient_pairs(builtin_pairs(), TAX).sign
    assert all(s == 1 for p, s in zip(builtin_pairs(), signs, strict=True)
               if p.category != "neutral_control")  # term_a is the marked group by design


def test_orientation_reads_only_the_swapped_words() -> None:
    a = "She got in his face and he cowered. She"
    b = "He got in his face and he cowered. He"
    assert own_words(a, b) == "She She" and own_words(b, a).lower() == "he he"
    gender = next(c for c in TAX.categories if c.name == "gender")
    assert pair_sign(Pair("gender", a, b, (0, len(a)), (0, len(b)), "", "", None, "x"),
                     gender, TAX.stoplist) == 1
    mrs = Pair("gender", "Mrs. Burr left.", "Mr. Burr left.", (0, 3), (0, 2), "", "", None, "x")
    assert pair_sign(mrs, gender, TAX.stoplist) == 1  # "Mrs" is not "Mr" + plural s
    names = Pair("gender", "Cheryl left.", "John left.", (0, 6), (0, 4), "", "", None, "x")
    assert pair_sign(names, gender, TAX.stoplist) == 1
    same = Pair("race_ethnicity", "An African came.", "An Asian came.", (3, 10), (3, 8), "", "",
                None, "x")
    race = next(c for c in TAX.categories if c.name == "race_ethnicity")
    assert pair_sign(same, race, TAX.stoplist) == 0  # two minority groups: unoriented


@pytest.fixture(scope="module")
def planted() -> tuple[Any, Any]:
    texts = fixture_texts()
    subject = tiny_audit_subject(texts=texts)
    return subject, planted_sae(subject, {0: FEMALE_WORDS}, n_random=20, texts=texts)


def _flags(tmp: Path, planted: tuple[Any, Any], spec: str) -> dict[tuple[int, str, int], Any]:
    """Run a real audit of ``spec``; its flags by (feature, category, tier)."""
    subject, sae = planted
    db = open_database(f"sqlite:///{tmp / 'a.db'}")
    run_audit(audit_ctx(db, subject, sae, CONFIG), pairs=spec, out_dir=tmp / "out")
    with db.session() as s:
        rows = s.query(Flag, Feature.index).join(Feature, Flag.feature_id == Feature.id).all()
        return {(idx, f.category, f.tier): (f.severity, f.effect_size, f.q_value, f.evidence)
                for f, idx in rows}


@pytest.mark.parametrize("source", ["builtin", "crows", "winobias"])
def test_one_sided_feature_is_flagged_on_every_source(
        tmp_path: Path, planted: tuple[Any, Any], source: str) -> None:
    spec = {"builtin": "builtin", "crows": f"crows:{write_crows(tmp_path / 'c.csv')}",
            "winobias": f"winobias:{write_winobias(tmp_path / 'w')}"}[source]
    flags = _flags(tmp_path, planted, spec)
    assert (0, "gender", 2) in flags, sorted(flags)
    _sev, dz, q, evidence = flags[(0, "gender", 2)]
    assert dz >= 0.5 and q < 0.05 and evidence["higher_on"] == "female"
    assert evidence["replication"]["n_tested"] >= 1
    assert not any(t >= 2 and f != 0 for f, _c, t in flags)  # random features stay quiet
    assert not any(t == 3 for _f, _c, t in flags)  # one-sided, not stereotype-dependent


def test_mixed_row_orientation_cancels_unless_oriented(planted: tuple[Any, Any],
                                                        tmp_path: Path) -> None:
    """The fixture reproduces the bug: text_a minus text_b cancels; the oriented one does not."""
    subject, sae = planted
    pairs = [p for p in load_pair_sets(f"crows:{write_crows(tmp_path / 'c.csv')}")[0]
             if p.category == "gender"]
    acts = pair_activations(subject, sae, pairs, np.array([0]), 0, 0)
    raw = paired_stats(acts.diffs).dz[0]
    signs = orient_pairs(pairs, TAX).sign.astype(float)[:, None]
    oriented = paired_stats(acts.diffs * signs).dz[0]
    assert abs(raw) < 0.5 <= oriented


@pytest.mark.parametrize("source", ["crows", "winobias"])
def test_row_order_shuffle_changes_no_flag(tmp_path: Path, planted: tuple[Any, Any],
                                           source: str) -> None:
    def spec(folder: Path, shuffle: int | None) -> str:
        folder.mkdir()
        if source == "crows":
            return f"crows:{write_crows(folder / 'c.csv', shuffle)}"
        return f"winobias:{write_winobias(folder / 'w', shuffle)}"

    base = _flags(tmp_path / "plain", planted, spec(tmp_path / "plain", None))
    for seed in (1, 2):
        shuffled = _flags(tmp_path / f"s{seed}", planted, spec(tmp_path / f"s{seed}", seed))
        assert {k: v[0] for k, v in shuffled.items()} == {k: v[0] for k, v in base.items()}
        for key in (k for k in base if k[2] == 2):
            assert shuffled[key][1] == pytest.approx(base[key][1], rel=1e-9)
            assert shuffled[key][2] == pytest.approx(base[key][2], rel=1e-9)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="shared bias data not present")
def test_one_sided_feature_on_the_real_benchmarks(tmp_path: Path) -> None:
    """The same planted feature on the real CrowS-Pairs and WinoBias files, and on copies with
    the two sentences of a random half of the rows swapped: the tier-2 flags do not change."""
    crows = SHARED / "crows_pairs" / "crows_pairs_anonymized.csv"
    wino = SHARED / "winobias"
    pairs = load_pair_sets(f"crows:{crows},winobias:{wino}")[0]
    texts = [t for p in pairs for t in (p.text_a, p.text_b)]
    subject = tiny_audit_subject(texts=texts, embed_scale=32.0)  # separable on long sentences
    sae = planted_sae(subject, {0: FEMALE_WORDS | {"women", "herself", "mom"}}, n_random=10,
                      texts=texts)
    (tmp_path / "shuffled").mkdir()
    shuffled = {"crows": shuffle_crows(crows, tmp_path / "shuffled" / "c.csv", 3),
                "winobias": shuffle_winobias(wino, tmp_path / "shuffled" / "w", 3)}
    for name, path in (("crows", crows), ("winobias", wino)):
        runs = {}
        for variant, where in (("plain", path), ("shuffled", shuffled[name])):
            (tmp_path / name / variant).mkdir(parents=True)
            runs[variant] = _flags(tmp_path / name / variant, (subject, sae), f"{name}:{where}")
        flags = runs["plain"]
        assert (0, "gender", 2) in flags, (name, sorted(flags))
        assert flags[(0, "gender", 2)][3]["higher_on"] == "female"
        tier2 = {k: v for k, v in flags.items() if k[2] == 2}
        moved = {k: v for k, v in runs["shuffled"].items() if k[2] == 2}
        assert moved.keys() == tier2.keys(), name
        for key, (_sev, dz, q, _ev) in tier2.items():  # swapped rows land in other batches:
            assert moved[key][1] == pytest.approx(dz, rel=1e-6)  # float32 padding noise only
            assert moved[key][2] == pytest.approx(q, rel=1e-6, abs=1e-12)
