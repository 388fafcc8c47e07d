"""Explain prompt formats side by side, in one process, on real and planted features (issue 14).

For each template family (``bills`` = today's template and path, ``delphi``, ``pairs``) and
model kind (completion prompts for the offline base Gemma; chat prompts on a subset), on

- the offline default's first N collected features (a copy of a main-job database: its
  train examples are what the explain stage shows, its test examples what it is scored on),
- the planted-rule features of ``bench_scoring_validity`` (known truth),

it prints: prompt tokens per explanation (all of them, and those actually computed once a
shared prefix is reused), seconds per feature, the quality gate's rejection rate with reasons,
true > wrong on the planted rules with the LLM explanations, and the share of real features
whose best label (higher simulation score, embedding simulator) is the LLM's rather than the
token-statistics baseline's. Ratios are against ``bills`` measured in the same run.

    cp /tmp/base_pristine.db /tmp/bench_explain.db
    python benchmarks/bench_explain.py --db /tmp/bench_explain.db            # 64 features
    python benchmarks/bench_explain.py --db /tmp/bench_explain.db --features 8 --no-planted
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from autolabel.examples import TextExample, TokenDecoder  # noqa: E402
from autolabel.explain import Candidate, LLMExplainer, TokenStatsExplainer  # noqa: E402


@dataclass
class Run:
    """One format's results on one set of features."""

    label: str
    candidates: list[Candidate]
    seconds: float
    tokens_in: list[int] = field(default_factory=list)
    computed: int = 0  # prompt tokens actually run through the model (prefix reuse counted)

    def line(self, base: Run | None) -> str:
        n = len(self.candidates)
        statuses = Counter(c.status for c in self.candidates)
        reasons = Counter(c.reason for c in self.candidates if c.reason)
        asked = n - statuses.get("error", 0)
        rejected = statuses.get("rejected", 0) + statuses.get("parse_error", 0)
        mean_in = float(np.mean(self.tokens_in)) if self.tokens_in else 0.0
        ratio = ""
        if base is not None and base.tokens_in and self.tokens_in:
            ratio = (f"  tokens {float(np.mean(base.tokens_in)) / mean_in:4.1f}x fewer, "
                     f"{base.seconds / self.seconds:4.1f}x faster than {base.label}")
        return (f"{self.label:<22} prompt tokens/expl {mean_in:7.0f} (computed "
                f"{self.computed / max(1, len(self.tokens_in)):6.0f})  s/feature "
                f"{self.seconds / max(1, n):6.2f}  gate rejected {rejected}/{asked} "
                f"({rejected / max(1, asked):4.0%}) {dict(reasons)}  ok {statuses.get('ok', 0)}"
                + ratio)


class Counting:
    """Forwards to a client; keeps every completion's prompt-token count."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.provider, self.model = inner, inner.provider, inner.model
        self.tokens_in: list[int] = []

    def capabilities(self) -> Any:
        return self.inner.capabilities()

    @property
    def breaker_open(self) -> bool:
        return False

    def local_backend(self) -> Any:
        return self.inner

    def complete(self, prompt: str, **kw: Any) -> Any:
        return self._seen([self.inner.complete(prompt, **kw)])[0]

    def chat(self, messages: Sequence[dict[str, str]], **kw: Any) -> Any:
        return self._seen([self.inner.chat(messages, **kw)])[0]

    def complete_many(self, prompts: Sequence[str], **kw: Any) -> list[Any]:
        return self._seen(list(self.inner.complete_many(prompts, **kw)))

    def _seen(self, comps: list[Any]) -> list[Any]:
        self.tokens_in += [c.tokens_in for c in comps]
        return comps


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="a COPY of a main-job database (written to)")
    ap.add_argument("--features", type=int, default=64, help="first N collected features")
    ap.add_argument("--formats", default="bills,delphi,pairs")
    ap.add_argument("--chat-features", type=int, default=16,
                    help="features for the chat prompts (0: skip chat)")
    ap.add_argument("--chat-formats", default="delphi,pairs")
    ap.add_argument("--no-planted", action="store_true")
    ap.add_argument("--no-score", action="store_true", help="skip simulation scoring")
    ap.add_argument("--chunk", type=int, default=8, help="features per explain batch")
    ap.add_argument("--base-features", type=int, default=0,
                    help="features for the bills baseline (0: all; per-feature ratios)")
    ap.add_argument("--planted-formats", default="delphi,pairs,bills",
                    help="formats explained on the planted rules")
    ap.add_argument("--show", type=int, default=3, help="rejected replies shown per format")
    return ap.parse_args()


def real_features(path: str, n: int) -> tuple[list[list[TextExample]], list[list[TextExample]],
                                               list[float], Any, Any]:
    """(train, test, scale) per feature of the database's newest SAE, and its tokenizer."""
    from autolabel.db import open_database
    from autolabel.store import find_sae, load_examples, select_features
    from autolabel.subject import load_tokenizer

    database = open_database(path)
    tokenizer = load_tokenizer()
    decode = TokenDecoder(tokenizer)
    train, test, scales = [], [], []
    with database.session() as s:
        sae = find_sae(s, None)
        rows = select_features(s, sae.id, None, sae.d_sae)[:n]
        for f in rows:
            tr = load_examples(s, f.id, split="train", kinds=("top", "quantile"))
            te = load_examples(s, f.id, split="test")
            train.append([e.to_text(decode) for e in tr])
            test.append([e.to_text(decode) for e in te])
            scales.append(max((e.max_activation for e in tr), default=0.0))
    return train, test, scales, tokenizer, decode


def explain(label: str, client: Any, family: str, variant: str,
            features: list[list[TextExample]], chunk: int) -> Run:
    """The explain stage's loop: chunks of features through ``explain_many``."""
    counting = Counting(client)
    explainer = LLMExplainer(counting, template=family, variant=variant)
    before = dict(getattr(client, "prefix_stats", {}))
    start = time.perf_counter()
    out: list[Candidate] = []
    for i in range(0, len(features), chunk):
        out += [cands[0] for cands in explainer.explain_many(features[i:i + chunk])]
    seconds = time.perf_counter() - start
    saved = getattr(client, "prefix_stats", {}).get("tokens_saved", 0) - before.get(
        "tokens_saved", 0)
    run = Run(label, out, seconds, counting.tokens_in)
    run.computed = sum(counting.tokens_in) - saved
    print(run.line(None), flush=True)
    return run


def show_rejected(run: Run, n: int) -> None:
    """A few rejected replies with their reasons, so the rate can be judged by eye."""
    bad = [c for c in run.candidates if c.status in ("rejected", "parse_error")][:n]
    for c in bad:
        print(f"#   {c.reason or c.status}: {(c.raw_reply or '')[:70]!r}", flush=True)


def best_share(runs: dict[str, Run], baseline: list[Candidate | None],
               test: list[list[TextExample]], scales: list[float], scorer: Any) -> None:
    """Per format: share of features whose better-scoring label is the LLM's."""
    base_r = [_score(scorer, c.text if c else None, t, s)
              for c, t, s in zip(baseline, test, scales, strict=True)]
    for label, run in runs.items():
        wins = scored = 0
        rs = []
        for cand, tok_r, t, s in zip(run.candidates, base_r, test, scales, strict=False):
            r = _score(scorer, cand.text if cand.status == "ok" else None, t, s)
            if r is None and tok_r is None:
                continue
            scored += 1
            rs.append(r if r is not None else np.nan)
            wins += int(r is not None and (tok_r is None or r > tok_r))
        mean_r = float(np.nanmean(rs)) if rs and not np.all(np.isnan(rs)) else float("nan")
        mean_tok = float(np.nanmean([r for r in base_r if r is not None] or [np.nan]))
        print(f"{label:<22} best label from the LLM: {wins}/{scored} ({wins / max(1, scored):.0%})"
              f"  mean r LLM {mean_r:+.3f} vs tokens {mean_tok:+.3f}", flush=True)


def _score(scorer: Any, text: str | None, test: list[TextExample], scale: float) -> float | None:
    if not text or not test or scale <= 0:
        return None
    return scorer.score(text, test, scale).value


def planted(client: Any, families: list[str], scorer: Any, tokenizer: Any, chunk: int) -> None:
    """true > wrong on the planted rules with each format's LLM explanations."""
    from bench_scoring_validity import wrong_index

    from autolabel.scoring import hf_tokenize, planted_from_corpus

    data = planted_from_corpus(hf_tokenize(tokenizer), spec="wikipedia-sample", window=24,
                               max_tokens=60_000, n_top=6, n_random=4)
    for family in families:
        run = explain(f"planted {family}", client, family, "completion",
                      [d.train for d in data], chunk)
        texts = [c.text if c.status == "ok" else None for c in run.candidates]
        wins, rows = 0, []
        for i, d in enumerate(data):
            scale = max((max(s.activations, default=0.0) for s in d.train), default=1.0) or 1.0
            true = _score(scorer, texts[i], d.test, scale)
            wrong = _score(scorer, texts[wrong_index(i, len(data))], d.test, scale)
            wins += int(true is not None and (wrong is None or true > wrong))
            rows.append(f"{d.feature.name}={texts[i]!r:.40}")
        print(f"planted {family:<14} true > wrong with LLM explanations: {wins}/{len(data)}"
              f"  ({sum(t is not None for t in texts)} ok)", flush=True)
        print("#   " + "  ".join(rows), flush=True)


def main() -> None:
    args = parse_args()
    from autolabel.config import load_config
    from autolabel.llm import LocalClient
    from autolabel.pipeline.explain import corpus_background

    t0 = time.perf_counter()
    train, test, scales, tokenizer, decode = real_features(args.db, args.features)
    reuse = LocalClient()
    reuse.complete("The capital of France is", max_tokens=4)  # load + warm up
    naive = LocalClient.from_model(reuse.lm, reuse.tokenizer, reuse.model, reuse_prefix=False)
    print(f"# {len(train)} features; model ready in {time.perf_counter() - t0:.1f} s; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)

    runs: dict[str, Run] = {}
    for family in [f for f in args.formats.split(",") if f]:  # "": planted rules only
        client = naive if family == "bills" else reuse  # bills: today's template and path
        shown = train[:args.base_features] if family == "bills" and args.base_features else train
        runs[f"{family} completion"] = explain(f"{family} completion", client, family,
                                               "completion", shown, args.chunk)
        show_rejected(runs[f"{family} completion"], args.show)
    for family in [f for f in args.chat_formats.split(",") if f and args.chat_features]:
        runs[f"{family} chat"] = explain(f"{family} chat", reuse, family, "chat",
                                         train[:args.chat_features], args.chunk)
        show_rejected(runs[f"{family} chat"], args.show)
    base = runs.get("bills completion")
    print("\n# summary (ratios against bills completion, same run)")
    for run in runs.values():
        print(run.line(base if run is not base else None))

    if args.no_score:
        return
    from autolabel.embed import LocalEmbedder
    from autolabel.scoring import EmbeddingSimulator, SimulationScorer

    scorer = SimulationScorer(EmbeddingSimulator(LocalEmbedder(), mode="token"))
    config = load_config(overrides={}, environ={})
    background = corpus_background(config, decode)
    stats = TokenStatsExplainer()
    baseline = [stats.explain(t, background) for t in train]
    baseline_ok = [c if c.status == "ok" else None for c in baseline]
    print("\n# best label per real feature (embedding simulator, test split)")
    best_share(runs, baseline_ok, test, scales, scorer)
    if not args.no_planted:
        print("\n# planted rules (bench_scoring_validity's features)")
        planted(reuse, [f for f in args.planted_formats.split(",") if f], scorer, tokenizer,
                args.chunk)
    print(f"# load at the end {os.getloadavg()[0]:.1f}; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
