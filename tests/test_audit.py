"""Bias audit: taxonomy/lexicon, statistics, planted-bias acceptance test, incremental skip."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

from autolabel.audit import (  # noqa: E402
    AuditError,
    bh_qvalues,
    bootstrap_dz_ci,
    effect_size,
    lexicon_matches,
    load_taxonomy,
    paired_stats,
    parse_judge_reply,
    run_audit,
)
from autolabel.config import Config  # noqa: E402
from autolabel.db import Explanation, Feature, Flag, open_database  # noqa: E402
from autolabel.errors import InputError  # noqa: E402
from autolabel.pairs import builtin_pairs  # noqa: E402
from autolabel.store import register_sae  # noqa: E402
from autolabel.subject import SubjectModel, subject_from_model  # noqa: E402

# --- fakes: a word-level fast tokenizer, a tiny Gemma, a fake SAE with planted features ---------

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]


def word_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A fast word-level tokenizer (with offsets) over the words of ``texts``; BOS prepended."""
    words = sorted({w.lower() for t in texts for w in re.findall(r"\w+|[^\w\s]", t)})
    vocab = {tok: i for i, tok in enumerate(SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.normalizer = normalizers.Lowercase()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[
        ("<bos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>", padding_side="left")


def tiny_audit_subject(seed: int = 0) -> SubjectModel:
    """A random 2-layer Gemma 3 cut at layer 0, with a tokenizer covering the built-in pairs."""
    texts = [t for p in builtin_pairs() for t in (p.text_a, p.text_b)]
    tokenizer = word_tokenizer(texts + ["<script>alert(1)</script>"])
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=16,
        max_position_embeddings=128, pad_token_id=0, bos_token_id=2, eos_token_id=1,
    )
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():  # token identity dominates the residual, context adds variation
        model.model.embed_tokens.weight.mul_(8.0)
    return subject_from_model(model, tokenizer, 0, model_id="tiny-gemma-audit")


@dataclass
class FakeSAE:
    """Duck-typed LoadedSAE. Planted latents fire on chosen words (cosine to the words' mean
    residuals above a threshold); the others are random ReLU directions ``relu(x @ W + b)``."""

    W: torch.Tensor
    b: torch.Tensor
    prototypes: list[torch.Tensor]
    taus: list[float]
    hook_name: str = "blocks.0.hook_resid_post"
    source: str = "fake"
    release: str | None = None
    sae_id: str | None = None
    path: Path | None = None
    architecture: str = "fake-relu"
    model_id: str | None = "tiny-gemma-audit"

    @property
    def d_in(self) -> int:
        return int(self.W.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W.shape[1])

    @property
    def content_hash(self) -> str:
        import hashlib

        return hashlib.sha256(self.W.numpy().tobytes() + self.b.numpy().tobytes()).hexdigest()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(x.float() @ self.W + self.b)
        unit = torch.nn.functional.normalize(x.float(), dim=-1)
        for i, (protos, tau) in enumerate(zip(self.prototypes, self.taus, strict=True)):
            cos = (unit @ torch.nn.functional.normalize(protos, dim=-1).T).amax(-1)
            out[:, i] = torch.relu(cos - tau) * 10
        return out


def token_residuals(subject: SubjectModel, texts: list[str]) -> tuple[torch.Tensor, list[str]]:
    """Residuals of every real token of ``texts`` and the token strings."""
    enc = subject.tokenizer(texts, padding=True, return_tensors="pt")
    resid = subject.resid(enc["input_ids"], enc["attention_mask"])
    keep = enc["attention_mask"].bool() & (enc["input_ids"] > 3)
    toks = subject.tokenizer.convert_ids_to_tokens(enc["input_ids"][keep].tolist())
    return resid[keep], toks


def context_words(n: int, seed: int = 0) -> list[str]:
    """``n`` random words that occur in the pair sentences but never as a differing term."""
    import random

    pairs = builtin_pairs()
    terms = {w.lower() for p in pairs for t in (p.term_a, p.term_b) for w in re.findall(r"\w+", t)}
    words = sorted({w.lower() for p in pairs for w in re.findall(r"\w+", p.text_a)} - terms)
    return random.Random(seed).sample(words, n)


def planted_sae(subject: SubjectModel, targets: dict[int, set[str]], n_random: int = 20,
                seed: int = 0) -> FakeSAE:
    """Feature i fires only on the words in ``targets[i]`` (threshold fitted on the pair
    sentences); ``n_random`` more features fire on random context words ("random features":
    words the counterfactual swaps never change)."""
    texts = [t for p in builtin_pairs() for t in (p.text_a, p.text_b)]
    resid, toks = token_residuals(subject, texts)
    targets = dict(targets)
    for j, word in enumerate(context_words(n_random, seed)):
        targets[len(targets) + j * 0] = {word}
    n = len(targets)
    W, b = torch.zeros(resid.shape[1], n), torch.zeros(n)
    unit = torch.nn.functional.normalize(resid, dim=-1)
    protos, taus = [], []
    for i in range(n):
        pos = torch.tensor([t in targets[i] for t in toks])
        proto = torch.stack([resid[[t == w for t in toks]].mean(0) for w in targets[i]
                             if w in toks])
        cos = (unit @ torch.nn.functional.normalize(proto, dim=-1).T).amax(-1)
        lo, hi = float(cos[~pos].max()), float(cos[pos].min())
        assert hi > lo, f"planted feature {i} is not separable ({lo:.3f} vs {hi:.3f})"
        protos.append(proto)
        taus.append((lo + hi) / 2)
    return FakeSAE(W, b, protos, taus)


CALIBRATION_RELATED = [
    ("gender", "female pronouns and references to women"),
    ("gender", "words about mothers, wives and daughters"),
    ("race_ethnicity", "mentions of Black people and racial identity"),
    ("religion", "Islam, mosques and Muslim practice"),
    ("nationality", "immigrants and people from foreign countries"),
    ("age", "elderly people and retirement"),
    ("disability", "wheelchair users and physical disabilities"),
    ("sexual_orientation", "gay and lesbian relationships"),
    ("socioeconomic", "poverty and homeless people"),
    ("physical_appearance", "body weight and being overweight"),
]
CALIBRATION_UNRELATED = ["Python function definitions", "numbers in dates",
                         "closing parentheses in code", "weather forecasts and rain",
                         "football scores", "chemical element names", "past tense verbs",
                         "URLs and web addresses", "cooking recipes", "financial stock prices"]


def bag_embedder(texts: Sequence[str]) -> np.ndarray:
    """A stand-in embedder with no similarity at all, so tier 1 runs on the lexicon alone."""
    return np.zeros((len(texts), 8), dtype=np.float32)


# --- taxonomy and tier 1 ----------------------------------------------------------------------


def test_lexicon_word_boundaries_and_stoplist() -> None:
    tax = load_taxonomy()
    assert "gender" in lexicon_matches("mentions of women and mothers", tax)
    assert "race_ethnicity" in lexicon_matches("Black families in the census", tax)
    assert lexicon_matches("black coffee and white space in code", tax) == {}
    assert lexicon_matches("a race condition between threads", tax) == {}
    assert "gender" not in lexicon_matches("the word 'shell' and 'manual'", tax)


def test_user_taxonomy_overrides_and_extends(tmp_path: Path) -> None:
    user = tmp_path / "tax.json"
    user.write_text(json.dumps({"categories": {"caste": {
        "description": "Caste", "lexicon": ["dalit", "brahmin"]}}, "stoplist": ["dalit road"]}))
    tax = load_taxonomy(user)
    assert "caste" in tax.names() and "gender" in tax.names()
    assert "caste" in lexicon_matches("Dalit communities", tax)
    assert lexicon_matches("Dalit Road in the city", tax) == {}
    user.write_text("{not json")
    with pytest.raises(InputError, match="invalid JSON"):
        load_taxonomy(user)


def test_judge_reply_parsed_strictly() -> None:
    tax = load_taxonomy()
    ok = parse_judge_reply('{"category": "gender", "verdict": "related", "rationale": "x"}', tax)
    assert (ok.category, ok.verdict) == ("gender", "related")
    for bad in ["nope", '{"category": "gender"}',
                '{"category": "astrology", "verdict": "related", "rationale": "x"}']:
        with pytest.raises(AuditError):
            parse_judge_reply(bad, tax)


@pytest.mark.slow
def test_embedding_threshold_calibration() -> None:
    """The stated threshold separates clearly related from unrelated labels with MiniLM."""
    from autolabel.audit import EMBED_THRESHOLD, category_similarity, default_embedder

    tax, embed = load_taxonomy(), default_embedder()
    sims = category_similarity([t for _, t in CALIBRATION_RELATED], tax, embed)
    own = [sims[i, tax.names().index(c)] for i, (c, _) in enumerate(CALIBRATION_RELATED)]
    assert min(own) >= EMBED_THRESHOLD
    assert category_similarity(CALIBRATION_UNRELATED, tax, embed).max() < EMBED_THRESHOLD


# --- statistics -------------------------------------------------------------------------------


def test_effect_size_pvalues_and_bh_match_scipy() -> None:
    rng = np.random.default_rng(1)
    d = rng.normal(0.3, 1.0, (40, 6))
    d[:, 5] = 0.0
    st = paired_stats(d)
    np.testing.assert_allclose(st.dz[:5], d[:, :5].mean(0) / d[:, :5].std(0, ddof=1))
    np.testing.assert_allclose(st.p_t[:5], sps.ttest_1samp(d[:, :5], 0.0).pvalue)
    np.testing.assert_allclose(st.p_wilcoxon[:5], sps.wilcoxon(d[:, :5]).pvalue)
    assert st.dz[5] == 0 and st.p_t[5] == 1 and st.p_wilcoxon[5] == 1
    p = np.array([0.01, 0.04, 0.03, 0.5, 0.002])
    np.testing.assert_allclose(bh_qvalues(p), sps.false_discovery_control(p))
    # by hand: sorted p 0.002,0.01,0.03,0.04,0.5 -> q 0.01,0.025,0.05,0.05,0.5
    np.testing.assert_allclose(np.sort(bh_qvalues(p)), [0.01, 0.025, 0.05, 0.05, 0.5])
    assert effect_size(np.ones((5, 1)))[0] == 100.0  # constant nonzero difference is clipped


def test_bootstrap_ci_contains_estimate_and_is_seeded() -> None:
    rng = np.random.default_rng(2)
    d = rng.normal(0.5, 1.0, (60, 200))
    lo, hi = bootstrap_dz_ci(d, n_boot=500, seed=3)
    dz = effect_size(d)
    assert np.all(lo <= dz) and np.all(dz <= hi) and np.all(hi - lo > 0.2)
    lo2, hi2 = bootstrap_dz_ci(d, n_boot=500, seed=3)
    np.testing.assert_array_equal(lo, lo2)
    assert not np.array_equal(lo, bootstrap_dz_ci(d, n_boot=500, seed=4)[0])


# --- the planted-bias acceptance test ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> tuple[object, object]:
    subject = tiny_audit_subject()
    sae = planted_sae(subject, {0: {"she", "her", "woman"}, 1: {"table"}}, n_random=30)
    return subject, sae


def _seed_labels(url: str, subject: object, sae: object, labels: dict[int, str]) -> None:
    db = open_database(url)
    with db.session() as s:
        row = register_sae(s, sae, 0)  # type: ignore[arg-type]
        for idx in range(sae.d_sae):  # type: ignore[attr-defined]
            feat = Feature(sae_id=row.id, index=idx)
            s.add(feat)
            s.flush()
            if idx in labels:
                s.add(Explanation(feature_id=feat.id, explainer="llm", llm_model="fake-llm",
                                  prompt_hash="abc123", text=labels[idx], status="ok",
                                  is_best=True))
    db.close()


def test_planted_bias_feature_is_flagged(tmp_path: Path, tiny: tuple[object, object]) -> None:
    subject, sae = tiny
    url = f"sqlite:///{tmp_path / 'a.db'}"
    _seed_labels(url, subject, sae, {
        0: "the pronouns she and her and the word woman <script>alert(1)</script>",
        1: "furniture such as tables",
        2: "commas in lists"})
    db = open_database(url)
    start = time.perf_counter()
    res = run_audit(Config(), db, out_dir=tmp_path / "out", subject=subject, sae=sae,
                    embedder=bag_embedder, argv=["autolabel", "audit"])
    elapsed = time.perf_counter() - start
    with db.session() as s:
        flags = s.query(Flag, Feature.index).join(Feature, Flag.feature_id == Feature.id).all()
        got = {(idx, f.category, f.tier): f for f, idx in flags}
    assert (0, "gender", 1) in got and (0, "gender", 2) in got
    assert got[(0, "gender", 2)].q_value < 0.05 and got[(0, "gender", 2)].effect_size >= 0.5
    assert got[(0, "gender", 2)].severity == "high"
    ev = got[(0, "gender", 2)].evidence
    assert ev["ci95_dz"][0] <= ev["d_z"] <= ev["ci95_dz"][1] and ev["specificity"] >= 2
    tier2 = {(i, c) for i, c, t in got if t == 2}
    assert tier2 == {(0, "gender")}, tier2  # no random feature, no 'table' feature
    assert not any(i == 1 and t >= 2 for i, _, t in got)
    assert res.html_path.is_file() and res.json_path.is_file() and not res.skipped
    html = res.html_path.read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)" in html
    facts = json.loads(res.json_path.read_text())
    assert facts["summary"]["flagged_features"] == res.flagged_features
    assert facts["results"]["per_category"][0]["random_flag_rate"] <= 0.05
    assert elapsed < 120
    # incremental: same inputs are skipped; force re-runs
    again = run_audit(Config(), db, out_dir=tmp_path / "out", subject=subject, sae=sae,
                      embedder=bag_embedder)
    assert again.skipped and again.audit_id == res.audit_id
    forced = run_audit(Config(), db, out_dir=tmp_path / "out2", subject=subject, sae=sae,
                       embedder=bag_embedder, force=True)
    assert not forced.skipped and forced.audit_id != res.audit_id


def test_audit_without_collected_features_uses_all_latents(
        tmp_path: Path, tiny: tuple[object, object]) -> None:
    subject, sae = tiny
    db = open_database(f"sqlite:///{tmp_path / 'b.db'}")
    res = run_audit(Config(), db, out_dir=tmp_path / "o", subject=subject, sae=sae,
                    features=None, embedder=bag_embedder)
    assert res.n_features == sae.d_sae  # type: ignore[attr-defined]
    assert res.by_tier[1] == 0 and res.by_tier[2] >= 1
    with pytest.raises(InputError, match="out of range"):
        run_audit(Config(), db, out_dir=tmp_path / "o", subject=subject, sae=sae,
                  features=[999], embedder=bag_embedder)


@pytest.mark.slow
def test_audit_real_gemma_default_sae(tmp_path: Path) -> None:
    """Real Gemma 3 270M + the cached default SAE, built-in pairs, within 10 minutes."""
    root = Path(os.environ.get("AUTOLABEL_CACHE_DIR") or Path.home() / ".cache" / "autolabel")
    sae_dir = Path.home() / ".cache" / "autolabel" / "saes" / "gemma-3-270m-L6-topk4096-k32"
    if not (sae_dir / "cfg.json").is_file():
        pytest.skip(f"default SAE not cached at {sae_dir}")
    from autolabel.loading import load_subject_for
    from autolabel.saes import load_sae

    os.environ.setdefault("AUTOLABEL_CACHE_DIR", str(root))
    config = Config()
    db = open_database(f"sqlite:///{tmp_path / 'g.db'}")
    start = time.perf_counter()
    subject = load_subject_for(config)
    sae = load_sae(str(sae_dir))
    res = run_audit(config, db, out_dir=tmp_path / "report", subject=subject, sae=sae)
    elapsed = time.perf_counter() - start
    print(f"real audit: {elapsed:.1f} s, {res.n_features} features, {res.n_pairs} pairs, "
          f"{res.n_flags} flags, by tier {res.by_tier}")
    assert res.html_path.is_file() and res.json_path.is_file()
    assert elapsed < 600
