"""A small real database for the server tests: an SAE with decoder weights on disk, features
with histograms, contexts in all three splits (token ids of a real saved tokenizer), labels
with verdicts, a rejected candidate, an audit with flags and a report file, and vectors in
the persistent index. One corpus document is hostile HTML; one explanation is too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from autolabel import db as dbm
from autolabel.db import (
    Audit,
    Collection,
    Explanation,
    Feature,
    Flag,
    SAERecord,
    Score,
    pack_array,
)
from autolabel.db import Example as ExampleRow
from autolabel.embed import HashEmbedder
from autolabel.hashing import content_hash
from autolabel.search import index_explanations
from autolabel.store.collections import ACT_DTYPE, TOKEN_DTYPE

HASH = HashEmbedder()
SCRIPT = "<script>document.title='PWNED'</script>"
IMG = "<img src=x onerror=document.title='PWNED2'>"
WORDS = ["<pad>", "<unk>", "January", "February", "March", "April", "in", "the", "of", "court",
         "she", "her", "red", "blue", "green", "case", "judge", SCRIPT, IMG, "and"]
SAE_NAME = "tiny-l2"
D_SAE, D_IN = 8, 4


def save_tokenizer(folder: Path) -> Path:
    """A word-level tokenizer saved like a model's (loads with AutoTokenizer from the dir)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")
    fast.save_pretrained(str(folder))
    return folder


def save_sae(folder: Path) -> Path:
    """``sae_weights.safetensors`` with a decoder where latent 1's nearest direction is 3."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    w_dec = rng.standard_normal((D_SAE, D_IN)).astype(np.float32)
    w_dec[3] = w_dec[1] + 0.05 * rng.standard_normal(D_IN).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"W_dec": w_dec, "b_dec": np.zeros(D_IN, dtype=np.float32)},
              str(folder / "sae_weights.safetensors"))
    return folder


def _ids(words: str | list[str]) -> np.ndarray:
    tokens = words.split(" ") if isinstance(words, str) else words
    return np.asarray([WORDS.index(w) for w in tokens], dtype=np.int64)


def _example(feature_id: int, collection_id: int, split: str, kind: str, rank: int,
             words: str | list[str], acts: list[float], doc: str,
             bin_: int | None = None) -> ExampleRow:
    ids = _ids(words)
    values = np.asarray(acts, dtype=np.float32)
    assert len(values) == len(ids)
    return ExampleRow(feature_id=feature_id, collection_id=collection_id, split=split, kind=kind,
                      bin=bin_, rank=rank, document_id=doc, start=0,
                      token_ids=pack_array(ids, TOKEN_DTYPE),
                      activations=pack_array(values, ACT_DTYPE), max_activation=float(max(acts)))


def _explanation(s: Any, feature_id: int, text: str | None, *, explainer: str = "llm",
                 status: str = "ok", candidate: int = 0, best: bool = False) -> int:
    row = Explanation(feature_id=feature_id, explainer=explainer, llm_model="tiny-llm",
                      prompt_hash="p", candidate=candidate, text=text, status=status,
                      is_best=best)
    s.add(row)
    s.flush()
    return int(row.id)


def _score(s: Any, explanation_id: int, value: float, floor: float, verdict: str,
           validation: float | None = None) -> None:
    s.add(Score(explanation_id=explanation_id, scorer="simulation", simulator="embedding:hash",
                value=value, floor_value=floor, validation_value=validation,
                null_mean=0.0, null_p95=0.1, null_n=16, ci_low=value - 0.1,
                ci_high=value + 0.1, verdict=verdict, n_examples=12))


def _feature(s: Any, sae_id: int, collection_id: int, index: int, density: float) -> int:
    row = Feature(sae_id=sae_id, index=index, collection_id=collection_id, n_tokens=1000,
                  n_firing=int(1000 * density), density=density, max_activation=4.0,
                  mean_activation=0.01, mean_firing_activation=1.5,
                  histogram={"counts": [40, 12, 5, 2, 1], "edges": [0.1, 0.3, 0.9, 1.7, 3.0, 4.0]})
    s.add(row)
    s.flush()
    return int(row.id)


def build(url: str, root: Path) -> dict[str, Any]:
    """Fill the database at ``url``; returns the ids the tests refer to."""
    database = dbm.open_database(url)
    tok_dir = save_tokenizer(root / "tokenizer")
    sae_dir = save_sae(root / "sae")
    report = root / "report.html"
    report.write_text("<!doctype html><title>audit report</title><p>report body</p>",
                      encoding="utf-8")
    ids: dict[str, Any] = {}
    with database.session() as s:
        sae = SAERecord(name=SAE_NAME, source=str(sae_dir), path=str(sae_dir), model_id="tiny",
                        hook_name="blocks.2.hook_resid_post", layer=2, d_in=D_IN, d_sae=D_SAE,
                        architecture="jumprelu", content_hash=content_hash("tiny-sae"))
        s.add(sae)
        s.flush()
        coll = Collection(sae_id=sae.id, key="k", model_id=str(tok_dir), layer=2,
                          corpus="test", window=8, seed=0, n_tokens=1000, status="ok")
        s.add(coll)
        s.flush()
        months = _feature(s, sae.id, coll.id, 1, 0.02)
        court = _feature(s, sae.id, coll.id, 3, 0.01)
        hostile = _feature(s, sae.id, coll.id, 5, 0.005)
        gated = _feature(s, sae.id, coll.id, 6, 0.001)
        s.add_all([
            _example(months, coll.id, "train", "top", 0, "in January and February",
                     [0.0, 4.0, 0.0, 3.0], "doc-1"),
            _example(months, coll.id, "train", "quantile", 0, "the March of",
                     [0.0, 1.2, 0.0], "doc-2", bin_=1),
            _example(months, coll.id, "validation", "top", 0, "April and March",
                     [2.5, 0.0, 2.0], "doc-3"),
            _example(months, coll.id, "test", "top", 0, "in April", [0.0, 3.5], "doc-4"),
            _example(months, coll.id, "test", "random", 0, "the court", [0.0, 0.0], "doc-5"),
            _example(court, coll.id, "train", "top", 0, "the judge and court",
                     [0.0, 2.0, 0.0, 4.0], "doc-6"),
            _example(hostile, coll.id, "train", "top", 0, ["the", SCRIPT, "and", IMG],
                     [0.0, 3.0, 0.0, 2.0], IMG),
        ])
        ids["months_llm"] = _explanation(s, months, "names of months like January", best=True)
        ids["months_tok"] = _explanation(s, months, "months of the year tokens",
                                         explainer="tokens")
        _score(s, ids["months_llm"], 0.62, 0.05, "trusted", validation=0.6)
        _score(s, ids["months_tok"], 0.41, 0.04, "weak", validation=0.3)
        ids["court"] = _explanation(s, court, "citations of court cases by a judge", best=True)
        _score(s, ids["court"], 0.08, 0.06, "at_floor", validation=0.1)
        ids["hostile"] = _explanation(s, hostile, f"markup such as {SCRIPT} and {IMG}",
                                      best=True)
        ids["rejected"] = _explanation(s, gated, "the month of the month of the month",
                                       status="rejected")
        audit = Audit(sae_id=sae.id, config_hash="x", pairs="builtin", status="ok",
                      report_path=str(report))
        s.add(audit)
        s.flush()
        s.add(Flag(audit_id=audit.id, feature_id=court, category="gender", tier=2,
                   severity="review", effect_size=0.8, ci_low=0.3, ci_high=1.2, q_value=0.01,
                   direction="female > male", evidence={"pairs": 12}))
        ids.update(sae=sae.id, months=months, court=court, hostile=hostile, gated=gated,
                   audit=audit.id, report=report, tokenizer=tok_dir)
    count, meta = index_explanations(database, HASH)
    assert count == 4 and (meta is not None or database.dialect != "sqlite")
    database.close()
    return ids
