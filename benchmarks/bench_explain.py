"""Explanations per minute with the local LLM: one ``complete`` per feature vs ``complete_many``.

Both runs use the same explainer settings and the same 8 synthetic features (records built from
plain English sentences with planted activations: month names, numbers, negations, …), in the
same process, after a warm-up call, so the ratio measures batching alone. Each mode uses its
own seed so an in-client cache cannot answer the second run; cache hits are counted anyway.

    python benchmarks/bench_explain.py              # offline default: Gemma 3 270M base, CPU
    python benchmarks/bench_explain.py --features 4 --max-tokens 32
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from autolabel.examples import TextExample
from autolabel.explain import Candidate, LLMExplainer
from autolabel.llm import LocalClient

FEATURES: dict[str, tuple[set[str], list[str]]] = {
    "months": ({"January", "April", "August", "September", "November"}, [
        "The bridge reopened on 4 April after long repairs .",
        "Most of the staff take leave in August every year .",
        "Sales fell sharply in January and recovered by September .",
        "The festival returns every November to the old town .",
    ]),
    "numbers": ({"12", "340", "7", "2019", "45"}, [
        "The ticket cost 12 dollars and the bus took 45 minutes .",
        "About 340 people came to the opening night .",
        "He scored 7 goals in the season that ended in 2019 .",
        "Add 12 grams of salt to the water .",
    ]),
    "negation": ({"not", "never", "no", "n't"}, [
        "The council did not approve the new budget .",
        "We never agreed to those terms .",
        "There is no reason to wait any longer .",
        "They could n't find the keys anywhere .",
    ]),
    "countries": ({"France", "Japan", "Brazil", "Canada", "Kenya"}, [
        "The delegation flew from France to Japan last week .",
        "Coffee from Brazil is sold all over the world .",
        "She moved to Canada after finishing school .",
        "The marathon winner came from Kenya again .",
    ]),
    "weekdays": ({"Monday", "Friday", "Sunday", "Tuesday"}, [
        "The shop is closed on Monday mornings .",
        "We usually meet on Friday after work .",
        "Sunday lunch at grandmother's house is a tradition .",
        "The report is due next Tuesday at the latest .",
    ]),
    "colours": ({"red", "blue", "green", "yellow"}, [
        "She painted the door a bright red last summer .",
        "The sky turned deep blue after the rain .",
        "A green light means the road is clear .",
        "He wore a yellow raincoat to school .",
    ]),
    "question_words": ({"Why", "How", "What", "Where", "When"}, [
        "Why did the committee reject the plan ?",
        "How many students passed the exam this year ?",
        "What time does the last train leave ?",
        "Where did you put the spare keys ?",
    ]),
    "family": ({"mother", "father", "sister", "brother", "grandmother"}, [
        "My mother grew up on a small farm .",
        "His father and brother run the bakery together .",
        "Her sister lives in the city now .",
        "The grandmother told stories every evening .",
    ]),
}


def synthetic_features(n: int) -> list[list[TextExample]]:
    """Word-level records: tokens carry their leading space like a BPE tokenizer's would."""
    out = []
    for name, (hot, sentences) in list(FEATURES.items())[:n]:
        examples = []
        for i, sentence in enumerate(sentences):
            words = sentence.split()
            tokens = [words[0]] + [" " + w for w in words[1:]]
            acts = [(4.0 - 0.5 * i) if w in hot else 0.0 for w in words]
            examples.append(TextExample(tokens, acts, f"{name}-{i}"))
        out.append(examples)
    return out


class CountingClient:
    """Forwards to the real client; counts calls, batch calls and cache hits."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.provider, self.model = inner, inner.provider, inner.model
        self.counts: Counter[str] = Counter()

    def capabilities(self) -> Any:
        return self.inner.capabilities()

    def _seen(self, comps: Sequence[Any]) -> None:
        self.counts["cached"] += sum(1 for c in comps if getattr(c, "cached", False))

    def complete(self, prompt: str, **kw: Any) -> Any:
        self.counts["complete"] += 1
        comp = self.inner.complete(prompt, **kw)
        self._seen([comp])
        return comp

    def chat(self, messages: Sequence[dict[str, str]], **kw: Any) -> Any:
        self.counts["chat"] += 1
        comp = self.inner.chat(messages, **kw)
        self._seen([comp])
        return comp

    def complete_many(self, prompts: Sequence[str], **kw: Any) -> list[Any]:
        self.counts["complete_many"] += 1
        comps = self.inner.complete_many(prompts, **kw)
        self._seen(comps)
        return list(comps)


def _report(label: str, results: list[list[Candidate]], seconds: float,
            client: CountingClient) -> float:
    rate = len(results) * 60.0 / seconds
    statuses = Counter(c.status for cands in results for c in cands)
    print(f"{label:>9}: {len(results)} features in {seconds:6.1f} s = {rate:6.1f} "
          f"explanations/min  statuses={dict(statuses)}  calls={dict(client.counts)}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--model", default=None, help="local model (default: LocalClient's)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    inner = LocalClient(model=args.model) if args.model else LocalClient()
    features = synthetic_features(args.features)
    inner.complete("The capital of France is", max_tokens=4)  # load + warm up
    print(f"model {inner.model} ready in {time.perf_counter() - t0:.1f} s")

    rates = {}
    for label, seed in (("unbatched", 0), ("batched", 1)):
        client = CountingClient(inner)
        explainer = LLMExplainer(client, max_tokens=args.max_tokens, seed=seed)
        t = time.perf_counter()
        if label == "batched":
            results = explainer.explain_many(features)
        else:
            results = [explainer.explain(f) for f in features]
        rates[label] = _report(label, results, time.perf_counter() - t, client)
        for name, cands in zip(FEATURES, results, strict=False):
            print(f"           {name:>15}: {cands[0].status:<11} {cands[0].raw_reply!r}")
    print(f"batched / unbatched = {rates['batched'] / rates['unbatched']:.2f}x")


if __name__ == "__main__":
    main()
