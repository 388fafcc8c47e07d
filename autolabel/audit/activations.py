"""Tier 2 inputs: both sentences of every pair through model + SAE, max over the differing span.

Per pair, a feature's statistic is its **maximum activation over the tokens of the differing
span** (one value per side). Spans are aligned by character offsets, so "she"/"he" and
"African American"/"white" compare term with term even when the two terms tokenize into
different numbers of tokens. The same statistic of random residual directions is the null.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from autolabel.audit.pairs import Pair
from autolabel.audit.stats import random_directions
from autolabel.audit.taxonomy import AuditError
from autolabel.errors import ModelError

Progress = Callable[[int, int], None]  # (done, total)
BATCH_SIZE = 32


def tokenize(tokenizer: Any, texts: Sequence[str]) -> Any:
    """Batch-tokenize with character offsets (needs a 'fast' tokenizer)."""
    try:
        return tokenizer(list(texts), return_offsets_mapping=True, padding=True,
                         return_tensors="pt")
    except (NotImplementedError, TypeError, ValueError) as exc:
        raise ModelError(f"the subject tokenizer cannot return character offsets ({exc}); "
                         "use a fast (Rust) tokenizer for audits") from None


def span_token_mask(offsets: Any, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``[B, T]`` bool: real tokens whose character range overlaps the row's span."""
    off = torch.as_tensor(offsets)
    span = torch.as_tensor(spans, dtype=off.dtype)
    start, end = off[..., 0], off[..., 1]
    return (end > start) & (start < span[:, 1:2]) & (end > span[:, 0:1])


def _latents(subject: Any, sae: Any, enc: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Float residuals ``[B, T, d_model]`` and SAE latents ``[B, T, d_sae]`` of a batch."""
    resid = subject.resid(enc["input_ids"], enc["attention_mask"]).float()
    latents = sae.encode(resid.reshape(-1, resid.shape[-1])).reshape(*resid.shape[:2], -1)
    return resid, latents


def span_max(subject: Any, sae: Any, texts: Sequence[str], spans: Sequence[tuple[int, int]],
             features: np.ndarray, random_dirs: np.ndarray | None = None,
             batch_size: int = BATCH_SIZE, progress: Progress | None = None,
             ) -> tuple[np.ndarray, np.ndarray]:
    """Max activation over each text's span: SAE features ``[N, F]`` and random directions.

    Texts are processed in length-sorted batches (little padding); only the selected feature
    columns are kept, so memory is ``N x F`` whatever the SAE width.
    """
    order = np.argsort([len(t) for t in texts], kind="stable")
    feats = torch.as_tensor(features, dtype=torch.long)
    dirs = None if random_dirs is None else torch.as_tensor(random_dirs, dtype=torch.float32)
    out = np.zeros((len(texts), len(features)), dtype=np.float32)
    rand = np.zeros((len(texts), 0 if dirs is None else dirs.shape[1]), dtype=np.float32)
    for lo in range(0, len(texts), batch_size):
        idx = order[lo:lo + batch_size]
        acts, proj, empty = _batch_span_max(subject, sae, [texts[i] for i in idx],
                                            [spans[i] for i in idx], feats, dirs)
        if empty:
            raise AuditError(f"{empty} pair span(s) cover no token; check the pair spans")
        out[idx], rand[idx] = acts, proj
        if progress is not None:
            progress(min(lo + batch_size, len(texts)), len(texts))
    return out, rand


def _batch_span_max(subject: Any, sae: Any, texts: list[str], spans: list[tuple[int, int]],
                    feats: torch.Tensor, dirs: torch.Tensor | None,
                    ) -> tuple[np.ndarray, np.ndarray, int]:
    """One forward batch: masked max over span tokens, for latents and random projections."""
    enc = tokenize(subject.tokenizer, texts)
    mask = span_token_mask(enc["offset_mapping"], spans) & enc["attention_mask"].bool()
    resid, latents = _latents(subject, sae, enc)
    latents = latents[..., feats.to(latents.device)].cpu()
    neg = torch.tensor(float("-inf"))
    m = mask.unsqueeze(-1)
    acts = torch.where(m, latents, neg).amax(1)
    proj = torch.zeros(len(texts), 0)
    if dirs is not None:
        proj = torch.where(m, resid.cpu() @ dirs, neg).amax(1)
    empty = int((~mask.any(1)).sum())
    return acts.clamp_min(-1e30).numpy(), proj.clamp_min(-1e30).numpy(), empty


@dataclass
class PairActivations:
    """Span maxima of every pair: texts and spans list all A sides, then all B sides."""

    texts: list[str]
    spans: list[tuple[int, int]]
    acts: np.ndarray  # [2N, F] span max of the audited features
    diffs: np.ndarray  # [N, F] A minus B
    rand: np.ndarray  # [N, n_random] A minus B for the random directions


def pair_activations(subject: Any, sae: Any, pairs: Sequence[Pair], features: np.ndarray,
                     n_random: int, seed: int,
                     progress: Progress | None = None) -> PairActivations:
    """One batched forward pass over both sides of every pair (features and random dirs)."""
    texts = [p.text_a for p in pairs] + [p.text_b for p in pairs]
    spans = [p.span_a for p in pairs] + [p.span_b for p in pairs]
    d_model = int(getattr(sae, "d_in", 0) or subject.d_model)
    dirs = random_directions(d_model, n_random, seed)
    acts, rand = span_max(subject, sae, texts, spans, features, dirs, progress=progress)
    n = len(pairs)
    return PairActivations(texts, spans, acts, acts[:n].astype(np.float64) - acts[n:],
                           rand[:n].astype(np.float64) - rand[n:])


def token_activations(subject: Any, sae: Any, texts: Sequence[str], features: np.ndarray,
                      ) -> list[list[tuple[str, np.ndarray]]]:
    """Per text, (token text, activations of ``features``) for its real tokens (report cards)."""
    enc = tokenize(subject.tokenizer, texts)
    _, latents = _latents(subject, sae, enc)
    lat = latents[..., torch.as_tensor(features).to(latents.device)].cpu().numpy()
    out = []
    for b, text in enumerate(texts):
        pieces = []
        for t, (s, e) in enumerate(enc["offset_mapping"][b].tolist()):
            if e > s and enc["attention_mask"][b, t]:
                pieces.append((text[s:e], lat[b, t]))
        out.append(pieces)
    return out
