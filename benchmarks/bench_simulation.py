"""Cost of all-at-once simulation with a shared-prefix KV cache (issue 5, item 7).

Per planted feature (its held-out test windows), counts the tokens the local simulator feeds the
model, against
- the minimum: the prefix once + every sequence's slot lines once (no padding, no repeats);
- the strict minimum: the prefix once + one token per scored token (no slot format at all);
- per-sequence prompts (the echo path: the prefix again for every sequence);
- one-at-a-time simulation: one prompt per scored token (prefix + its sequence each time).
Targets: <= 1.2x the minimum, >= 20x fewer tokens than one-at-a-time. Wall times of the
batched KV path vs the naive full prompt per sequence are measured on the same sequences.

    python benchmarks/bench_simulation.py                 # offline Gemma 3 270M, 4 features
    python benchmarks/bench_simulation.py --features 2 --no-naive
    python benchmarks/bench_simulation.py --llm-model /path/to/hf-model-dir
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from autolabel.scoring import LocalLogprobSimulator, hf_tokenize, planted_from_corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--llm-model", default="gemma-3-270m")
    ap.add_argument("--features", type=int, default=4)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--n-top", type=int, default=8)
    ap.add_argument("--n-random", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-naive", action="store_true", help="skip timing the naive path")
    args = ap.parse_args()

    from autolabel.llm import LocalClient

    client = LocalClient(args.llm_model)
    data = planted_from_corpus(hf_tokenize(client.tokenizer), window=args.window,
                               max_tokens=40_000, n_top=args.n_top, n_random=args.n_random)
    sim = LocalLogprobSimulator(client, batch_size=args.batch_size)
    totals = np.zeros(6)
    times = np.zeros(2)
    for d in data[: args.features]:
        seqs = [s.tokens for s in d.test]
        n_prefix = len(sim.prefix_ids(d.feature.description))
        suffix = [len(sim.suffix_ids(s)[0]) for s in seqs]
        scored = sum(len(s) for s in seqs)
        before, start = sim.tokens_processed, time.perf_counter()
        fast = sim.predict(d.feature.description, seqs)
        actual = sim.tokens_processed - before
        times[0] += time.perf_counter() - start
        if not args.no_naive:
            start = time.perf_counter()
            naive = sim.predict_naive(d.feature.description, seqs)
            times[1] += time.perf_counter() - start
            diff = max(float(np.abs(a - b).max()) for a, b in zip(fast, naive, strict=True)
                       if len(a))
        row = np.array([actual, n_prefix + sum(suffix), n_prefix + scored,
                        sum(n_prefix + n for n in suffix),
                        sum(len(s) * (n_prefix + n) for s, n in zip(seqs, suffix, strict=True)),
                        scored])
        totals += row
        print(f"{d.feature.name:<12} seqs {len(seqs):3d} scored {scored:4d} prefix {n_prefix:4d} "
              f"| processed {actual:6d}  min {row[1]:6.0f}  strict-min {row[2]:6.0f}  "
              f"per-seq {row[3]:7.0f}  one-at-a-time {row[4]:9.0f}"
              + ("" if args.no_naive else f"  max|KV-naive| {diff:.1e}"), flush=True)
    actual, minimum, strict, per_seq, one_at_a_time, scored = totals
    n = min(args.features, len(data))
    print(f"\nper feature (mean of {n}): processed {actual / n:.0f} tokens, "
          f"{actual / scored:.2f} per scored token")
    print(f"processed / minimum (prefix once + slot lines once): {actual / minimum:.3f}x "
          "(target <= 1.2x)")
    print(f"processed / strict minimum (prefix once + 1 token per scored token): "
          f"{actual / strict:.2f}x (slot format: ~{(minimum - strict) / scored + 1:.1f} "
          "tokens per scored token)")
    print(f"per-sequence prompts / processed: {per_seq / actual:.1f}x")
    print(f"one-at-a-time / processed: {one_at_a_time / actual:.0f}x fewer tokens "
          "(target >= 20x)")
    print(f"wall: KV-batched {times[0]:.1f}s" + ("" if args.no_naive else
          f", naive full prompt per sequence {times[1]:.1f}s ({times[1] / times[0]:.1f}x)"))


if __name__ == "__main__":
    main()
