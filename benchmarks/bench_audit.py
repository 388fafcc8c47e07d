"""Audit forward throughput against the collector's forward-only throughput, in one process.

On the offline default model + SAE:
  (a) collector forward only: corpus windows (batch 8 x 128 tokens) to layer L, no SAE: the
      figure collection itself is measured against (benchmarks/bench_collect.py);
  (b) the audit's forward pass (autolabel.audit.activations.pair_activations) over the pair
      sentences: length buckets under a token budget, each sentence cut after its span,
      SAE encoding of the span tokens only (audited latents only where the SAE allows it),
      200 random directions;
  (c) the previous implementation (batches of 32 sorted by characters, whole sentences, the
      full SAE encoded on every token) as the baseline the change is measured against.
Throughput is counted in tokens of the *whole* pair sentences per second (what the audit
covers, whatever it skips); the tokens actually forwarded are printed too. (a) runs before
and after (b)/(c) and the mean is used, so a change in machine load shows up as a gap.

Target (issue 15): b/a >= 0.6.

    python benchmarks/bench_audit.py --pairs crows:PATH --max-pairs 400 --tokens 6000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from autolabel.audit.activations import pair_activations, span_inputs, span_token_mask
from autolabel.audit.pairs import NEUTRAL, load_pair_sets
from autolabel.audit.stats import random_directions
from autolabel.config import load_config
from autolabel.loading import load_subject_for, resolve_sae, token_batches


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def forward_only(subject: Any, batches: list[Any]) -> None:
    for b in batches:
        subject.resid(b.input_ids, b.attention_mask)


def legacy_span_max(subject: Any, sae: Any, texts: list[str], spans: list[tuple[int, int]],
                    feats: np.ndarray, dirs: np.ndarray) -> None:
    """The audit forward pass before issue 15, kept here as the baseline."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    f_idx, d = torch.as_tensor(feats), torch.as_tensor(dirs)
    for lo in range(0, len(texts), 32):
        idx = order[lo:lo + 32]
        enc = subject.tokenizer([texts[i] for i in idx], return_offsets_mapping=True,
                                padding=True, return_tensors="pt")
        mask = span_token_mask(enc["offset_mapping"], [spans[i] for i in idx])
        mask = mask & enc["attention_mask"].bool()
        resid = subject.resid(enc["input_ids"], enc["attention_mask"]).float()
        lat = sae.encode(resid.reshape(-1, resid.shape[-1])).reshape(*resid.shape[:2], -1)
        m = mask.unsqueeze(-1)
        torch.where(m, lat[..., f_idx], torch.tensor(float("-inf"))).amax(1)
        torch.where(m, resid @ d, torch.tensor(float("-inf"))).amax(1)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    config = load_config(overrides={"collect.batch_size": 8})
    subject = load_subject_for(config)
    sae, _ = resolve_sae(config, subject)
    batches = list(token_batches(config, subject.tokenizer, args.tokens))
    n_fwd = sum(int(b.attention_mask.sum()) for b in batches)
    pairs = [p for p in load_pair_sets(args.pairs)[0] if p.category != NEUTRAL][:args.max_pairs]
    texts = [p.text_a for p in pairs] + [p.text_b for p in pairs]
    spans = [p.span_a for p in pairs] + [p.span_b for p in pairs]
    inputs = span_inputs(subject.tokenizer, texts, spans)
    feats = np.arange(args.features)
    dirs = random_directions(sae.d_in, 200, 0)
    forward_only(subject, batches[:2])  # warm-up
    t_a1 = timed(lambda: forward_only(subject, batches))
    t_b = timed(lambda: pair_activations(subject, sae, pairs, feats, 200, 0))
    t_c = timed(lambda: legacy_span_max(subject, sae, texts, spans, feats, dirs))
    t_a2 = timed(lambda: forward_only(subject, batches))
    a = n_fwd / ((t_a1 + t_a2) / 2)
    b, c = inputs.full_tokens / t_b, inputs.full_tokens / t_c
    return {"pairs": args.pairs, "n_pairs": len(pairs), "sentence_tokens": inputs.full_tokens,
            "forwarded_tokens": inputs.forward_tokens, "collector_tokens": n_fwd,
            "threads": args.threads, "collector_forward_tok_s": [n_fwd / t_a1, n_fwd / t_a2],
            "audit_tok_s": b, "legacy_audit_tok_s": c, "audit_vs_collector": b / a,
            "legacy_vs_collector": c / a, "audit_vs_legacy": b / c,
            "audit_forwarded_tok_s": inputs.forward_tokens / t_b}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", default="builtin")
    parser.add_argument("--max-pairs", type=int, default=400)
    parser.add_argument("--tokens", type=int, default=6000, help="collector corpus tokens")
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    result = measure(args)
    result["uptime_before"] = uptime
    result["uptime_after"] = subprocess.run(["uptime"], capture_output=True,
                                            text=True).stdout.strip()
    print(json.dumps(result, indent=2))
    ok = result["audit_vs_collector"] >= 0.6
    print(f"audit / collector forward-only = {result['audit_vs_collector']:.2f} "
          f"(target >= 0.6: {'met' if ok else 'NOT met'}); audit / previous audit = "
          f"{result['audit_vs_legacy']:.2f}")


if __name__ == "__main__":
    main()
