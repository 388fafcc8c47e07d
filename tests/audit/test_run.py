"""run_audit end to end: the planted-bias acceptance test, all latents when nothing was
collected, incremental skip (before any model, SAE or embedder loads), and a real Gemma run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from autolabel.audit.pairs import load_pair_sets
from autolabel.audit.run import run_audit
from autolabel.config import Config
from autolabel.db import Database, Explanation, Feature, Flag, Score, open_database
from autolabel.errors import InputError
from autolabel.loading import RunContext, load_subject_for
from autolabel.saes import load_sae, local_sae_hash
from autolabel.store.saes import register_sae
from tests.audit.fakes import (
    assert_one_pass_per_sentence,
    audit_ctx,
    count_forwards,
    planted_sae,
    tiny_audit_subject,
)
from tests.tiny import HIDDEN, tiny_model_dir, tiny_sae_dir


@pytest.fixture(scope="module")
def tiny() -> tuple[object, object]:
    subject = tiny_audit_subject()
    sae = planted_sae(subject, {0: {"she", "her", "woman"}, 1: {"table"}}, n_random=30)
    return subject, sae


def _seed_labels(db: Database, sae: object, labels: dict[int, str], d_sae: int,
                 verdicts: dict[int, str] | None = None) -> None:
    """Register ``sae`` (layer 0) with a feature row per latent and the given best labels,
    each scored with its verdict (``trusted`` unless ``verdicts`` says otherwise; ``rejected``
    stores a gate-rejected candidate, ``unscored`` an ok one without a score)."""
    verdicts = verdicts or {}
    with db.session() as s:
        row = register_sae(s, sae, 0)  # type: ignore[arg-type]
        for idx in range(d_sae):
            feat = Feature(sae_id=row.id, index=idx)
            s.add(feat)
            s.flush()
            if idx not in labels:
                continue
            verdict = verdicts.get(idx, "trusted")
            expl = Explanation(feature_id=feat.id, explainer="llm", llm_model="fake-llm",
                               prompt_hash="abc123", text=labels[idx],
                               status="rejected" if verdict == "rejected" else "ok",
                               is_best=verdict != "rejected")
            s.add(expl)
            s.flush()
            if verdict not in ("rejected", "unscored"):
                s.add(Score(explanation_id=expl.id, scorer="simulation", simulator="embedding",
                            value=0.6, floor_value=0.05, null_p95=0.1, ci_low=0.4,
                            ci_high=0.7, n_examples=40, verdict=verdict))


def test_planted_bias_feature_is_flagged(tmp_path: Path, tiny: tuple[object, object],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    subject, sae = tiny
    url = f"sqlite:///{tmp_path / 'a.db'}"
    seed_db = open_database(url)
    _seed_labels(seed_db, sae, {
        0: "the pronouns she and her and the word woman <script>alert(1)</script>",
        1: "furniture such as tables",
        2: "commas in lists"}, sae.d_sae)  # type: ignore[attr-defined]
    seed_db.close()
    db = open_database(url)
    seen = count_forwards(monkeypatch, subject)
    res = run_audit(audit_ctx(db, subject, sae), pairs="builtin", out_dir=tmp_path / "out",
                    argv=["autolabel", "audit"])
    with db.session() as s:
        flags = s.query(Flag, Feature.index).join(Feature, Flag.feature_id == Feature.id).all()
        got = {(idx, f.category, f.tier): f for f, idx in flags}
    assert (0, "gender", 1) in got and (0, "gender", 2) in got
    assert got[(0, "gender", 2)].q_value < 0.05 and got[(0, "gender", 2)].effect_size >= 0.5
    assert got[(0, "gender", 2)].severity == "high"
    ev = got[(0, "gender", 2)].evidence
    assert ev["ci95_dz"][0] <= ev["d_z"] <= ev["ci95_dz"][1] and ev["specificity"] >= 2
    rep = ev["replication"]  # she/her/woman: the three pronoun templates replicate
    assert rep["status"] == "replicated" and rep["n_replicated"] >= 3 and rep["n_tested"] == 5
    assert {u["source"] for u in rep["by_source"]} == {"builtin"}
    tier2 = {(i, c) for i, c, t in got if t == 2}
    assert tier2 == {(0, "gender")}, tier2  # no random feature, no 'table' feature
    assert not any(i == 1 and t >= 2 for i, _, t in got)
    assert res.html_path.is_file() and res.json_path.is_file() and not res.skipped
    html = res.html_path.read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)" in html
    facts = json.loads(res.json_path.read_text())
    assert facts["summary"]["flagged_features"] == res.flagged_features
    assert facts["results"]["per_category"][0]["random_flag_rate"] <= 0.05
    assert facts["summary"]["labels"]["used_for_tier1"] == 3
    card = next(c for c in facts["flags"] if c["feature"] == 0)
    assert card["label"]["verdict"] == "trusted" and card["label"]["used_as_evidence"]
    texts = [s["tokens"] for p in card["pairs"] for s in p["sides"]]
    sentences = ["".join(t for t, _ in toks) for toks in texts]
    assert len(sentences) == len(set(sentences)) >= 4  # distinct sentences, both sides
    female = [p["sides"][0] for p in card["pairs"]]
    assert all(s["group"] == "female" and s["span_max"] > 0 for s in female)
    assert all(p["sides"][1]["span_max"] == 0 for p in card["pairs"])
    n_shown = sum(len(p["sides"]) for c in facts["flags"] for p in c["pairs"])
    assert_one_pass_per_sentence(seen, subject, load_pair_sets("builtin")[0],
                                 Config().audit.max_batch_tokens, n_shown)
    # incremental: same inputs are skipped (no forward pass at all); force re-runs
    n_batches = len(seen.batches)
    again = run_audit(audit_ctx(db, subject, sae), pairs="builtin", out_dir=tmp_path / "out")
    assert again.skipped and again.audit_id == res.audit_id
    assert len(seen.batches) == n_batches
    forced = run_audit(audit_ctx(db, subject, sae), pairs="builtin", out_dir=tmp_path / "out2",
                       force=True)
    assert not forced.skipped and forced.audit_id != res.audit_id


def test_tier1_reads_only_trusted_and_weak_labels(tmp_path: Path,
                                                  tiny: tuple[object, object]) -> None:
    """Rejected, at-floor and unscored labels are shown with their verdict, never evidence."""
    subject, sae = tiny
    db = open_database(f"sqlite:///{tmp_path / 't.db'}")
    rejected = "girls and ladies REJECTED-TEXT"
    _seed_labels(db, sae, {0: "the pronouns she and her", 2: "women and mothers",
                           3: "the word woman", 4: rejected, 5: "mentions of husbands"},
                 sae.d_sae,  # type: ignore[attr-defined]
                 verdicts={0: "weak", 2: "at_floor", 3: "unscored", 4: "rejected",
                           5: "trusted"})
    res = run_audit(audit_ctx(db, subject, sae), pairs="builtin", out_dir=tmp_path / "out")
    with db.session() as s:
        tier1 = {idx for f, idx in s.query(Flag, Feature.index).join(
            Feature, Flag.feature_id == Feature.id) if f.tier == 1}
    assert tier1 == {0, 5}
    facts = json.loads(res.json_path.read_text())
    counts = facts["summary"]["labels"]
    assert (counts["labelled"], counts["used_for_tier1"], counts["not_trusted"]) == (5, 2, 3)
    assert counts["by_verdict"] == {"weak": 1, "at_floor": 1, "unscored": 1, "rejected": 1,
                                    "trusted": 1}
    assert "REJECTED-TEXT" not in res.json_path.read_text()
    assert "REJECTED-TEXT" not in res.html_path.read_text()
    cards = {c["feature"]: c for c in facts["flags"]}
    assert cards[0]["label"]["verdict"] == "weak" and cards[0]["label"]["used_as_evidence"]
    assert "3 not trusted (not used)" in res.html_path.read_text()


def test_audit_without_collected_features_uses_all_latents(
        tmp_path: Path, tiny: tuple[object, object]) -> None:
    subject, sae = tiny
    db = open_database(f"sqlite:///{tmp_path / 'b.db'}")
    res = run_audit(audit_ctx(db, subject, sae), pairs="builtin", out_dir=tmp_path / "o",
                    features=None)
    assert res.n_features == sae.d_sae  # type: ignore[attr-defined]
    assert res.by_tier[1] == 0 and res.by_tier[2] >= 1
    with pytest.raises(InputError, match="out of range"):
        run_audit(audit_ctx(db, subject, sae), pairs="builtin", out_dir=tmp_path / "o",
                  features=[999])


def test_finished_audit_is_reused_without_loading_anything(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """A repeated audit is decided from the database and the SAE's file hash alone: the second
    context loads neither the model, nor the SAE, nor the embedder."""
    root = tmp_path_factory.mktemp("tinyaudit")
    model_dir, sae_dir = tiny_model_dir(root / "model"), tiny_sae_dir(root / "sae")
    config = Config.model_validate({
        "subject": {"model": str(model_dir), "layer": 2}, "sae": {"sae": str(sae_dir)},
        "search": {"embedding_model": "hash"}, "audit": {"n_boot": 50, "n_random": 10}})
    identity = SimpleNamespace(  # the SAE row as collect registers it, without loading sae-lens
        source=str(sae_dir), release=None, sae_id=None, path=sae_dir, model_id="tiny",
        hook_name="blocks.2.hook_resid_post", d_in=HIDDEN, d_sae=32, architecture="jumprelu",
        content_hash=local_sae_hash(sae_dir))
    db = open_database(f"sqlite:///{tmp_path / 'c.db'}")
    _seed_labels(db, identity, {0: "mentions of women and mothers"}, 32)
    first = RunContext(config, db)
    res = run_audit(first, pairs="builtin", out_dir=tmp_path / "out")
    assert not res.skipped and {"subject", "sae"} <= set(first.loaded)
    assert first.in_memory("embedder")  # the hash embedder has no model to count as loaded
    again = RunContext(config, db)
    reused = run_audit(again, pairs="builtin", out_dir=tmp_path / "out")
    assert reused.skipped and reused.audit_id == res.audit_id
    assert again.loaded == []
    assert not any(again.in_memory(n) for n in ("subject", "sae", "embedder", "llm"))


@pytest.mark.slow
def test_audit_real_gemma_default_sae(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real Gemma 3 270M + the cached default SAE, built-in pairs: one length-bucketed forward
    pass per sentence and nothing loaded beyond the given model and SAE (work is counted, not
    timed, so the test does not depend on the machine's speed)."""
    root = Path(os.environ.get("AUTOLABEL_CACHE_DIR") or Path.home() / ".cache" / "autolabel")
    sae_dir = Path.home() / ".cache" / "autolabel" / "saes" / "gemma-3-270m-L6-topk4096-k32"
    if not (sae_dir / "cfg.json").is_file():
        pytest.skip(f"default SAE not cached at {sae_dir}")
    os.environ.setdefault("AUTOLABEL_CACHE_DIR", str(root))
    config = Config()
    db = open_database(f"sqlite:///{tmp_path / 'g.db'}")
    start = time.perf_counter()
    subject = load_subject_for(config)
    sae = load_sae(str(sae_dir))
    ctx = RunContext.from_objects(config, db, subject=subject, sae=sae)
    seen = count_forwards(monkeypatch, subject)
    res = run_audit(ctx, pairs="builtin", out_dir=tmp_path / "report")
    elapsed = time.perf_counter() - start
    print(f"real audit: {elapsed:.1f} s, {res.n_features} features, {res.n_pairs} pairs, "
          f"{res.n_flags} flags, by tier {res.by_tier}")
    assert res.html_path.is_file() and res.json_path.is_file()
    facts = json.loads(res.json_path.read_text())
    n_shown = sum(len(p["sides"]) for c in facts["flags"] for p in c["pairs"])
    assert_one_pass_per_sentence(seen, subject, load_pair_sets("builtin")[0],
                                 config.audit.max_batch_tokens, n_shown)
    assert ctx.loaded == []  # no second model or SAE, no embedder (no labels to read)
