"""Tier 2 inputs: both sentences of every pair through model + SAE, max over the differing words.

Per pair, a feature's statistic is its **maximum activation over the tokens of the words that
differ** (one value per side): the pair's span, less any words the two sides share inside it
(a CrowS-Pairs row swapping "He ... his" for "She ... her" is read at those four words, not
at the shared words between them, which would give both sides the same maximum). Ranges are
aligned by character offsets, so "she"/"he" and "African American"/"white" compare term with
term even when they tokenize into different numbers of tokens. The same statistic of random
residual directions is the null.

Throughput (issue 15): the subject model is causal, so a token's residual depends only on the
tokens before it. Each sentence is therefore cut after its span's last token before the forward
pass (the residuals at the span are exactly those of the whole sentence), sentences are grouped
into length buckets under a token budget (little padding, big batches), and the SAE encodes
only the span tokens, computing only the audited latents where the architecture allows it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from autolabel.audit.pairs import Pair
from autolabel.audit.stats import random_directions
from autolabel.audit.taxonomy import AuditError
from autolabel.errors import ModelError

if TYPE_CHECKING:
    import torch

Progress = Callable[[int, int], None]  # (done, total)
MAX_BATCH_TOKENS = 4096  # padded tokens per forward batch
MAX_BATCH_ROWS = 256
ELEMENTWISE = {"StandardSAE", "JumpReLUSAE"}  # latent j depends on encoder column j alone


def tokenize(tokenizer: Any, texts: Sequence[str], **kwargs: Any) -> Any:
    """Tokenize with character offsets (needs a 'fast' tokenizer)."""
    try:
        return tokenizer(list(texts), return_offsets_mapping=True, **kwargs)
    except (NotImplementedError, TypeError, ValueError) as exc:
        raise ModelError(f"the subject tokenizer cannot return character offsets ({exc}); "
                         "use a fast (Rust) tokenizer for audits") from None


def span_token_mask(offsets: Any, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``[B, T]`` bool: real tokens whose character range overlaps the row's span."""
    import torch  # heavy (~3 s); a run with no audit to do never loads it
    off = torch.as_tensor(offsets)
    span = torch.as_tensor(spans, dtype=off.dtype)
    start, end = off[..., 0], off[..., 1]
    return (end > start) & (start < span[:, 1:2]) & (end > span[:, 0:1])


@dataclass
class SpanInputs:
    """Every text cut after its span: token ids, the span's token positions, and lengths."""

    ids: list[list[int]]
    span_pos: list[list[int]]
    full_tokens: int  # real tokens of the whole sentences (what the audit covers)

    @property
    def forward_tokens(self) -> int:
        """Tokens that actually go through the model."""
        return sum(len(i) for i in self.ids)


Ranges = Sequence[tuple[int, int]]  # character ranges of one text the statistic reads


def span_inputs(tokenizer: Any, texts: Sequence[str], spans: Sequence[tuple[int, int]],
                parts: Sequence[Ranges] | None = None) -> SpanInputs:
    """Tokenize once (no padding) and cut each text after the last token it is read at: the
    tokens overlapping its ``parts`` (the differing words), or its span where it has none."""
    enc = tokenize(tokenizer, texts)
    ranges = [list(p) or [s] for p, s in zip(parts, spans, strict=True)] if parts is not None \
        else [[s] for s in spans]
    ids, pos, empty, full = [], [], 0, 0
    for row, offsets, want in zip(enc["input_ids"], enc["offset_mapping"], ranges, strict=True):
        hits = [t for t, (s, e) in enumerate(offsets)
                if e > s and any(s < hi and e > lo for lo, hi in want)]
        full += len(row)
        if not hits:
            empty += 1
            hits = [len(row) - 1]
        ids.append(list(row[:hits[-1] + 1]))
        pos.append(hits)
    if empty:
        raise AuditError(f"{empty} pair span(s) cover no token; check the pair spans")
    return SpanInputs(ids, pos, full)


def length_buckets(lengths: Sequence[int], max_tokens: int = MAX_BATCH_TOKENS,
                   max_rows: int = MAX_BATCH_ROWS) -> list[np.ndarray]:
    """Index batches of similar length whose padded size stays under ``max_tokens``.

    Sorted by token length, so each batch's newest row is its longest: the padded size of a
    batch is its row count times that length.
    """
    batches: list[np.ndarray] = []
    current: list[int] = []
    for i in np.argsort(np.asarray(lengths), kind="stable").tolist():
        width = int(lengths[i])
        if current and ((len(current) + 1) * width > max_tokens or len(current) >= max_rows):
            batches.append(np.asarray(current, dtype=np.int64))
            current = []
        current.append(i)
    if current:
        batches.append(np.asarray(current, dtype=np.int64))
    return batches


def encode_selected(sae: Any, x: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """Latents ``feats`` of ``x`` ``[S, d_in] -> [S, F]``.

    For element-wise SAEs (standard ReLU, JumpReLU) only the audited encoder columns are
    computed; TopK-style SAEs need every pre-activation to pick the top k, so they encode in
    full and keep the audited columns.
    """
    import torch  # heavy (~3 s); a run with no audit to do never loads it
    inner: Any = getattr(sae, "sae", None)
    if type(inner).__name__ not in ELEMENTWISE:
        return sae.encode(x)[:, feats.to(x.device)].float()
    param = next(inner.parameters())
    idx = feats.to(param.device)
    with torch.inference_mode():
        sae_in = inner.process_sae_in(x.to(device=param.device, dtype=param.dtype))
        pre = sae_in @ inner.W_enc[:, idx] + inner.b_enc[idx]
        acts = inner.activation_fn(pre)
        if hasattr(inner, "threshold"):
            acts = acts * (pre > inner.threshold[idx]).to(acts.dtype)
    return acts.float()


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask (positions come from the mask, so side is moot)."""
    import torch  # heavy (~3 s); a run with no audit to do never loads it
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask


def _batch_span_max(subject: Any, sae: Any, rows: list[list[int]], pos: list[list[int]],
                    feats: torch.Tensor, dirs: torch.Tensor | None,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """One forward batch: per row, the max over its span tokens of latents and projections."""
    import torch  # heavy (~3 s); a run with no audit to do never loads it
    pad = subject.tokenizer.pad_token_id
    ids, mask = _pad(rows, 0 if pad is None else int(pad))
    resid = subject.resid(ids, mask)
    b_idx = torch.as_tensor([b for b, p in enumerate(pos) for _ in p], dtype=torch.long)
    t_idx = torch.as_tensor([t for p in pos for t in p], dtype=torch.long)
    span = resid[b_idx.to(resid.device), t_idx.to(resid.device)].float()
    acts = _row_max(encode_selected(sae, span, feats).cpu(), b_idx, len(rows))
    proj = torch.zeros(len(rows), 0)
    if dirs is not None:
        proj = _row_max((span @ dirs.to(span.device)).cpu(), b_idx, len(rows))
    return acts.numpy(), proj.numpy()


def _row_max(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """``[S, K]`` span-token values -> ``[n_rows, K]`` maximum per sentence."""
    import torch  # heavy (~3 s); a run with no audit to do never loads it
    out = torch.full((n_rows, values.shape[1]), float("-inf"), dtype=values.dtype)
    return out.scatter_reduce_(0, rows[:, None].expand_as(values), values, reduce="amax")


def span_max(subject: Any, sae: Any, texts: Sequence[str], spans: Sequence[tuple[int, int]],
             features: np.ndarray, random_dirs: np.ndarray | None = None,
             max_tokens: int = MAX_BATCH_TOKENS, progress: Progress | None = None,
             parts: Sequence[Ranges] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Max activation over each text's differing words (``parts``, else its span): SAE
    features ``[N, F]`` and random directions.

    Memory is ``N x F`` whatever the SAE width: only the audited columns are ever kept.
    """
    import torch  # heavy (~3 s); a run with no audit to do never loads it
    inputs = span_inputs(subject.tokenizer, texts, spans, parts)
    feats = torch.as_tensor(features, dtype=torch.long)
    dirs = None if random_dirs is None else torch.as_tensor(random_dirs, dtype=torch.float32)
    out = np.zeros((len(texts), len(features)), dtype=np.float32)
    rand = np.zeros((len(texts), 0 if dirs is None else dirs.shape[1]), dtype=np.float32)
    done = 0
    for idx in length_buckets([len(r) for r in inputs.ids], max_tokens):
        acts, proj = _batch_span_max(subject, sae, [inputs.ids[i] for i in idx],
                                     [inputs.span_pos[i] for i in idx], feats, dirs)
        out[idx], rand[idx] = acts, proj
        done += len(idx)
        if progress is not None:
            progress(done, len(texts))
    return out, rand


@dataclass
class PairActivations:
    """Span maxima of every pair: texts and spans list all A sides, then all B sides."""

    texts: list[str]
    spans: list[tuple[int, int]]
    acts: np.ndarray  # [2N, F] span max of the audited features
    diffs: np.ndarray  # [N, F] A minus B
    rand: np.ndarray  # [N, n_random] A minus B for the random directions


def pair_activations(subject: Any, sae: Any, pairs: Sequence[Pair], features: np.ndarray,
                     n_random: int, seed: int, progress: Progress | None = None,
                     max_tokens: int = MAX_BATCH_TOKENS) -> PairActivations:
    """One batched forward pass over both sides of every pair (features and random dirs)."""
    texts = [p.text_a for p in pairs] + [p.text_b for p in pairs]
    spans = [p.span_a for p in pairs] + [p.span_b for p in pairs]
    parts = [p.ranges_a for p in pairs] + [p.ranges_b for p in pairs]
    d_model = int(getattr(sae, "d_in", 0) or subject.d_model)
    dirs = random_directions(d_model, n_random, seed)
    acts, rand = span_max(subject, sae, texts, spans, features, dirs, max_tokens, progress,
                          parts)
    n = len(pairs)
    return PairActivations(texts, spans, acts, acts[:n].astype(np.float64) - acts[n:],
                           rand[:n].astype(np.float64) - rand[n:])


def token_activations(subject: Any, sae: Any, texts: Sequence[str], features: np.ndarray,
                      ) -> list[list[tuple[str, np.ndarray]]]:
    """Per text, (token text, activations of ``features``) for its real tokens (report cards).

    Each token's text starts where the previous one ended, so the pieces joined give the
    sentence back, spaces included.
    """
    import torch  # heavy (~3 s); a run with no audit to do never loads it
    enc = tokenize(subject.tokenizer, texts, padding=True, return_tensors="pt")
    resid = subject.resid(enc["input_ids"], enc["attention_mask"])
    flat = resid.reshape(-1, resid.shape[-1]).float()
    lat = encode_selected(sae, flat, torch.as_tensor(features, dtype=torch.long))
    lat_np = lat.reshape(*resid.shape[:2], -1).cpu().numpy()
    out = []
    for b, text in enumerate(texts):
        pieces, prev = [], None
        for t, (s, e) in enumerate(enc["offset_mapping"][b].tolist()):
            if e > s and enc["attention_mask"][b, t]:
                pieces.append((text[s if prev is None else prev:e], lat_np[b, t]))
                prev = e
        out.append(pieces)
    return out
