"""The audit's forward pass: cutting sentences after their span changes no activation, length
buckets respect the token budget, and encoding only the audited latents equals a full encode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from autolabel.audit.activations import (
    encode_selected,
    length_buckets,
    pair_activations,
    span_inputs,
    span_max,
    token_activations,
)
from autolabel.audit.pairs import Pair, builtin_pairs, diff_parts, diff_spans
from autolabel.saes import load_sae
from tests.audit.fakes import planted_sae, tiny_audit_subject
from tests.tiny import HIDDEN, tiny_sae_dir


def test_span_max_equals_the_full_sentence_maximum() -> None:
    """Residuals are causal: the sentence cut after its span gives the span's activations of
    the whole sentence (and random projections likewise)."""
    subject = tiny_audit_subject()
    sae = planted_sae(subject, {0: {"she", "her"}, 1: {"doctor"}}, n_random=6)
    pairs = builtin_pairs()[::7]
    texts = [p.text_a for p in pairs] + [p.text_b for p in pairs]
    spans = [p.span_a for p in pairs] + [p.span_b for p in pairs]
    feats = np.arange(sae.d_sae)
    got, _ = span_max(subject, sae, texts, spans, feats, max_tokens=64)
    full = token_activations(subject, sae, texts, feats)
    for i, (tokens, (lo, hi)) in enumerate(zip(full, spans, strict=True)):
        pos, want = 0, np.full(len(feats), -np.inf)
        for tok, acts in tokens:
            start = pos + (len(tok) - len(tok.lstrip()))
            if start < hi and pos + len(tok) > lo:
                want = np.maximum(want, acts)
            pos += len(tok)
        np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-4)
    inputs = span_inputs(subject.tokenizer, texts, spans)
    assert inputs.forward_tokens < inputs.full_tokens  # the tails were never forwarded


def test_length_buckets_cover_everything_within_budget() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=500).tolist()
    batches = length_buckets(lengths, max_tokens=512, max_rows=64)
    seen = np.sort(np.concatenate(batches))
    assert seen.tolist() == list(range(500))
    for b in batches:
        assert len(b) <= 64
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 512


def test_encode_selected_equals_full_encode(tmp_path: Path) -> None:
    """JumpReLU: only the audited encoder columns are computed, with identical values."""
    sae = load_sae(str(tiny_sae_dir(tmp_path / "sae")))
    x = torch.randn(40, HIDDEN) * 3
    feats = torch.tensor([0, 5, 7, 31])
    full = sae.encode(x)[:, feats]
    np.testing.assert_allclose(encode_selected(sae, x, feats).numpy(), full.numpy(),
                               rtol=1e-5, atol=1e-5)
    assert (full > 0).any()  # the comparison saw live latents


def test_only_the_differing_words_are_read_not_shared_words_between_them() -> None:
    """A CrowS-style row swaps two words with a shared "he" between them: the covering span
    gives both sides the same maximum (the shared "he"); the differing words do not."""
    a, b = "She said he was late, she said.", "He said he was late, he said."
    subject = tiny_audit_subject(texts=[a, b])
    sae = planted_sae(subject, {0: {"he"}}, n_random=2, texts=[a, b])
    spans = diff_spans(a, b)
    assert spans is not None
    parts = diff_parts(a, b)
    assert [a[slice(*r)] for r in parts[0]] == ["She", "she"]
    assert [b[slice(*r)] for r in parts[1]] == ["He", "he"]
    pair = Pair("gender", a, b, spans[0], spans[1], "", "", None, "x", parts_a=parts[0],
                parts_b=parts[1])
    covering, _ = span_max(subject, sae, [a, b], list(spans), np.array([0]))
    assert covering[0, 0] > 0 and covering[1, 0] > 0  # the female side "fires" on shared "he"
    acts = pair_activations(subject, sae, [pair], np.array([0]), 0, 0)
    assert acts.acts[0, 0] == 0 and acts.acts[1, 0] > 0
    assert acts.diffs[0, 0] < 0
