"""Validity of simulation scoring on planted-rule features (issues 5 and 9).

Planted features (autolabel/scoring/planted.py) have a known rule, so a trustworthy scorer must give
the true rule's description a higher score than another rule's. Each planted feature is treated
like an SAE feature: windows of real text (gensim's Wikipedia sample, tokenised by the subject
model's tokenizer) split by document; explanations come from the train split (the true
description, TokenStats, the LLM explainer); scores are pooled Pearson r on the test split
(top + random windows), each beside its floor (the same scorer on another feature's
explanation of the same kind, chosen with a fixed seed) and with its verdict (issue 13: null
distribution, bootstrap CI, the default ``[scoring]`` rule; trusted / weak / at_floor).

    python benchmarks/bench_scoring_validity.py                      # embedding + offline Gemma
    python benchmarks/bench_scoring_validity.py --no-llm             # embedding simulators only
    python benchmarks/bench_scoring_validity.py --base-url http://127.0.0.1:8080/v1 --llm-model m
    python benchmarks/bench_scoring_validity.py --quick              # fewer features/windows
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from autolabel.examples import TextExample
from autolabel.scoring import (
    EmbeddingSimulator,
    PlantedData,
    ScoreResult,
    SimulationScorer,
    Simulator,
    hf_tokenize,
    llm_simulator,
    planted_features,
    planted_from_corpus,
    sanity_check,
    wrong_description,
)
from autolabel.scoring.trust import TrustSettings, assess


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--llm-model", default="gemma-3-270m", help="simulator/explainer LLM")
    ap.add_argument("--base-url", default=None, help="OpenAI-compatible server (else local)")
    ap.add_argument("--no-llm", action="store_true", help="skip the LLM simulator + explainer")
    ap.add_argument("--no-llm-explainer", action="store_true", help="skip LLM explanations")
    ap.add_argument("--embedding-modes", default="token,window,mixed")
    ap.add_argument("--corpus", default="wikipedia-sample")
    ap.add_argument("--max-tokens", type=int, default=60_000, help="corpus tokens to window")
    ap.add_argument("--window", type=int, default=24)
    ap.add_argument("--n-top", type=int, default=6)
    ap.add_argument("--n-random", type=int, default=4)
    ap.add_argument("--features", type=int, default=0, help="first N planted features (0=all)")
    ap.add_argument("--sanity", action="store_true", help="also run each simulator's sanity check")
    ap.add_argument("--quick", action="store_true", help="6 features, 4+3 windows of 16")
    args = ap.parse_args()
    if args.quick:
        args.features, args.n_top, args.n_random, args.window = 6, 4, 3, 16
    return args


def make_client(args: argparse.Namespace) -> Any:
    from autolabel.llm import LocalClient, OpenAIClient

    if args.base_url:
        return OpenAIClient(args.llm_model, base_url=args.base_url)
    return LocalClient(args.llm_model)


def explanations(data: list[PlantedData], args: argparse.Namespace,
                 client: Any) -> dict[str, list[str | None]]:
    """Per source (true / tokens / llm): one explanation per planted feature, from train."""
    from autolabel.explain import LLMExplainer, TokenStatsExplainer

    out: dict[str, list[str | None]] = {"true": [d.feature.description for d in data]}
    background: Counter[str] = Counter()
    for d in data:
        for s in d.train:
            background.update(s.tokens)
    stats = TokenStatsExplainer()
    examples = [d.train for d in data]  # TextExample windows, as explainers take them
    out["tokens"] = [stats.explain(ex, background).text for ex in examples]
    if client is not None and not args.no_llm_explainer:
        explainer = LLMExplainer(client)
        out["llm"] = [explainer.explain(ex)[0].text for ex in examples]
    return out


def wrong_index(i: int, n: int) -> int:
    """The floor's source feature for feature i (seeded, as wrong_description)."""
    descriptions = [f.description for f in planted_features()]
    j = descriptions.index(wrong_description(i))
    return j if j < n and j != i else (i + 1) % n


Row = tuple[float | None, float | None, str]  # (r true, r wrong, verdict of the true one)


def score_source(simulator: Simulator, data: list[PlantedData],
                 texts: Sequence[str | None]) -> list[Row]:
    """(r with the feature's explanation, r with another feature's, the verdict of the first
    with the second as its floor: autolabel.scoring.trust, default [scoring] settings)."""
    scorer = SimulationScorer(simulator)
    rows = []
    for i, d in enumerate(data):
        scale = max((max(s.activations, default=0.0) for s in d.train), default=1.0) or 1.0
        wrong = texts[wrong_index(i, len(data))]
        true, floor = _r(scorer, texts[i], d.test, scale), _r(scorer, wrong, d.test, scale)
        value, floor_value = (true.value if true else None), (floor.value if floor else None)
        trust = assess(true.truth, true.pred, value, floor_value, true.metric,
                       TrustSettings()) if true else None
        rows.append((value, floor_value, trust.verdict if trust else "unscored"))
    return rows


def _r(scorer: SimulationScorer, text: str | None, test: list[TextExample],
       scale: float) -> ScoreResult | None:
    if not text:
        return None
    return scorer.score(text, test, scale)


def summarise(name: str, source: str, rows: list[Row], seconds: float) -> str:
    true = np.array([t if t is not None else 0.0 for t, _, _ in rows])
    wrong = np.array([w if w is not None else 0.0 for _, w, _ in rows])
    wins = float(np.mean(true > wrong))
    verdicts = Counter(v for _, _, v in rows)
    shown = " ".join(f"{k} {verdicts[k]}" for k in ("trusted", "weak", "at_floor", "unscored")
                     if verdicts[k])
    return (f"{name:<34} {source:<7} true {true.mean():+.3f}  wrong {wrong.mean():+.3f}  "
            f"true>wrong {wins:5.0%} ({int(round(wins * len(rows)))}/{len(rows)})  "
            f"verdicts: {shown}  {seconds:6.1f}s")


def _fmt(r: float | None) -> str:
    return "n/a" if r is None else f"{r:+.2f}"


def main() -> None:
    args = parse_args()
    from autolabel.embed import LocalEmbedder
    from autolabel.subject import load_tokenizer

    t0 = time.perf_counter()
    tokenizer = load_tokenizer()  # the offline subject model's tokenizer
    data = planted_from_corpus(hf_tokenize(tokenizer), spec=args.corpus, window=args.window,
                               max_tokens=args.max_tokens, n_top=args.n_top,
                               n_random=args.n_random)
    if args.features:
        data = data[: args.features]
    print(f"# {len(data)} planted features, test windows/feature "
          f"{np.mean([len(d.test) for d in data]):.1f} x {args.window} tokens; "
          f"built in {time.perf_counter() - t0:.1f}s")
    client = None if args.no_llm else make_client(args)
    sources = explanations(data, args, client)
    for i, d in enumerate(data):
        shown = {k: (v[i] or "")[:60] for k, v in sources.items() if k != "true"}
        firing = sum(a > 0 for s in d.test for a in s.activations)
        print(f"#  {d.feature.name:<13} test firing tokens {firing:<4} {shown}")
    simulators: list[tuple[str, Callable[[], Simulator]]] = []
    embedder = LocalEmbedder()
    for mode in [m for m in args.embedding_modes.split(",") if m]:
        simulators.append((f"embedding[{mode}]", lambda m=mode: EmbeddingSimulator(embedder,
                                                                                   mode=m)))
    if client is not None:
        simulators.append((f"llm[{client.model}]", lambda: llm_simulator(client)))
    for label, make in simulators:
        simulator = make()
        for source, texts in sources.items():
            start = time.perf_counter()
            rows = score_source(simulator, data, texts)
            print(summarise(f"{label} {simulator.name}", source, rows,
                            time.perf_counter() - start), flush=True)
            print("#   per feature (true/wrong verdict): " + "  ".join(
                f"{d.feature.name}={_fmt(t)}/{_fmt(w)} {v}"
                for d, (t, w, v) in zip(data, rows, strict=True)))
        if args.sanity:
            start = time.perf_counter()
            report = sanity_check(simulator)
            print(f"# sanity check {report.simulator}: mean |delta| {report.mean_abs_delta:.3f}"
                  f"  discrimination {report.discrimination:.0%}  passed {report.passed}"
                  f"  ({time.perf_counter() - start:.1f}s)", flush=True)


if __name__ == "__main__":
    main()
