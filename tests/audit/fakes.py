"""Audit fakes: a word-level fast tokenizer, a tiny Gemma, a fake SAE with planted features,
and a context that holds them (so audits run in seconds, with no download)."""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

from autolabel.audit.activations import length_buckets, span_inputs
from autolabel.audit.cards import CARD_BATCH
from autolabel.audit.pairs import Pair, builtin_pairs
from autolabel.config import Config
from autolabel.loading import RunContext
from autolabel.subject import SubjectModel, subject_from_model

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


def pair_texts() -> list[str]:
    """Both sentences of every built-in pair."""
    return [t for p in builtin_pairs() for t in (p.text_a, p.text_b)]


def tiny_audit_subject(seed: int = 0, texts: Sequence[str] = (),
                       embed_scale: float = 8.0) -> SubjectModel:
    """A random 2-layer Gemma 3 cut at layer 0, with a tokenizer covering the built-in pairs
    (and ``texts``, e.g. the sentences of a CrowS-Pairs or WinoBias fixture). A larger
    ``embed_scale`` makes token identity dominate the residual more (long, varied real
    sentences need it for a planted word feature to stay separable from context)."""
    tokenizer = word_tokenizer(pair_texts() + list(texts) + ["<script>alert(1)</script>"])
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=16,
        max_position_embeddings=128, pad_token_id=0, bos_token_id=2, eos_token_id=1,
    )
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():  # token identity dominates the residual, context adds variation
        model.model.embed_tokens.weight.mul_(embed_scale)
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
    pairs = builtin_pairs()
    terms = {w.lower() for p in pairs for t in (p.term_a, p.term_b) for w in re.findall(r"\w+", t)}
    words = sorted({w.lower() for p in pairs for w in re.findall(r"\w+", p.text_a)} - terms)
    return random.Random(seed).sample(words, n)


def planted_sae(subject: SubjectModel, targets: dict[int, set[str]], n_random: int = 20,
                seed: int = 0, texts: Sequence[str] = ()) -> FakeSAE:
    """Feature i fires only on the words in ``targets[i]`` (threshold fitted on the pair
    sentences and ``texts``); ``n_random`` more features fire on random context words
    ("random features": words the counterfactual swaps never change)."""
    all_texts = pair_texts() + list(texts)
    chunks, toks = [], []
    for lo in range(0, len(all_texts), 256):  # batches: long texts would pad everything
        r, tk = token_residuals(subject, all_texts[lo:lo + 256])
        chunks.append(r)
        toks.extend(tk)
    resid = torch.cat(chunks)
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


def bag_embedder(texts: Sequence[str]) -> np.ndarray:
    """A stand-in embedder with no similarity at all, so tier 1 runs on the lexicon alone."""
    return np.zeros((len(texts), 8), dtype=np.float32)


@dataclass
class BagEmbedder:
    """:func:`bag_embedder` in the shape a run context holds (``name``, ``dim``, ``embed``)."""

    name: str = "bag"
    dim: int = 8

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return bag_embedder(texts)


def audit_ctx(database: Any, subject: Any, sae: Any, config: Config | None = None,
              embedder: Any = None) -> RunContext:
    """A run context around in-memory fakes (the bag embedder unless told otherwise)."""
    return RunContext.from_objects(config or Config(), database, subject=subject, sae=sae,
                                   embedder=embedder or BagEmbedder())


@dataclass
class Forwards:
    """Every forward batch a subject ran, as (rows, padded width, real tokens)."""

    batches: list[tuple[int, int, int]] = field(default_factory=list)


def count_forwards(monkeypatch: pytest.MonkeyPatch, subject: Any) -> Forwards:
    """Record each ``subject.resid`` call (undone with ``monkeypatch``): forward passes are
    counted, not timed, so the check does not depend on the machine's speed or load."""
    seen, real = Forwards(), subject.resid

    def resid(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        seen.batches.append((int(input_ids.shape[0]), int(input_ids.shape[1]),
                             int(attention_mask.sum())))
        return real(input_ids, attention_mask)

    monkeypatch.setattr(subject, "resid", resid)
    return seen


def assert_one_pass_per_sentence(seen: Forwards, subject: Any, pairs: Sequence[Pair],
                                 max_tokens: int, n_shown: int) -> None:
    """The audit forwarded every pair sentence once, cut after its span, in length buckets
    under the token budget; then only the card sentences (``n_shown`` at most) in batches."""
    texts = [p.text_a for p in pairs] + [p.text_b for p in pairs]
    inputs = span_inputs(subject.tokenizer, texts, [p.span_a for p in pairs]
                         + [p.span_b for p in pairs], [p.ranges_a for p in pairs]
                         + [p.ranges_b for p in pairs])
    buckets = length_buckets([len(r) for r in inputs.ids], max_tokens)
    pair_pass, card_pass = seen.batches[:len(buckets)], seen.batches[len(buckets):]
    assert [rows for rows, _w, _t in pair_pass] == [len(b) for b in buckets]
    assert sum(real for _r, _w, real in pair_pass) == inputs.forward_tokens < inputs.full_tokens
    assert all(rows == 1 or rows * width <= max_tokens for rows, width, _t in pair_pass)
    assert (1 if n_shown else 0) <= len(card_pass) <= math.ceil(n_shown / CARD_BATCH)
