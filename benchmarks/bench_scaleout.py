"""Scale-out: corpus passes per run (the retired worker mode vs Ray), and collection throughput
with 2 Ray workers vs 1 local process, measured in one run (issue 17.7), and end to end.

(a) Corpus passes on 4,096 features. ``run --worker --batch-size 8`` ran collect → explain →
    score per claimed batch of 8 features, i.e. one collection (one corpus pass through the
    model) per batch. Its collection is replayed here with ``LocalExecutor`` once per batch of 8
    (the old worker's ``collect_stage`` per item did exactly that), against one ``--executor ray``
    collection of all 4,096 features over 2 actors. Passes = tokens forwarded through the model
    / corpus tokens. Uses the tiny test model with a 4,096-latent SAE, so the 512 worker-mode
    passes finish in minutes; the count does not depend on the model. The results of both are
    also compared (they must be identical: sampling does not depend on feature grouping).
(b) Throughput of the offline default (Gemma 3 270M to layer 6, default TopK-4096 SAE, all
    4,096 latents, window 64, batch 8): 1 local process with 2 torch threads vs 2 Ray actors
    with 1 thread each, on the same corpus budget. "collect" times exclude model loading (the
    actors load theirs before the clock starts); "with startup" includes starting the actors.

    python benchmarks/bench_scaleout.py --tokens 30000 --pass-tokens 1500

(c) End-to-end ``autolabel run`` of the offline default (issue 17.7, third bullet) on a smaller
    budget, local vs ``--executor ray``, run on its own:

    python benchmarks/bench_scaleout.py --end-to-end 8 --e2e-tokens 50000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.tiny (the tiny model and corpus builders)

from autolabel.config import Config, load_config  # noqa: E402
from autolabel.db import open_database  # noqa: E402
from autolabel.executors import LocalExecutor, RayExecutor  # noqa: E402
from autolabel.loading import RunContext  # noqa: E402
from autolabel.pipeline.collect import collect_settings  # noqa: E402
from tests.collect.snapshots import collected  # noqa: E402
from tests.executors.test_pools import same_scores, stored  # noqa: E402
from tests.tiny import tiny_corpus, tiny_model_dir, tiny_sae_dir  # noqa: E402


def context(config: Config, folder: Path) -> RunContext:
    return RunContext(config, open_database(str(folder / "bench.db")))


def signature(results: list[Any]) -> list[tuple]:
    return [(r.feature, r.n_firing, r.max_activation, r.mean_activation,
             tuple((e.split, e.kind, e.rank, e.document_id, e.start, e.activations.tobytes())
                   for e in r.examples)) for r in results]


def passes(folder: Path, tokens: int, batch: int) -> dict[str, Any]:
    """(a): tokens forwarded per corpus token, worker mode (per batch) vs Ray (once)."""
    torch.set_num_threads(1)
    model, sae = tiny_model_dir(folder / "model"), tiny_sae_dir(folder / "sae", d_sae=4096)
    corpus = tiny_corpus(folder / "corpus.txt", n_docs=400)
    over = {"subject.model": str(model), "subject.layer": 2, "subject.device": "cpu",
            "sae.sae": str(sae), "corpus.source": str(corpus), "corpus.window": 16,
            "collect.tokens": tokens, "collect.features": "all"}
    config = load_config(overrides=over, environ={})
    features, settings = list(range(4096)), collect_settings(config)
    local = LocalExecutor(context(config, folder))
    forwarded, start, per_batch = [0], time.perf_counter(), []
    for lo in range(0, len(features), batch):
        out = local.collect(features[lo:lo + batch], settings, lambda n: forwarded.__setitem__(
            0, forwarded[0] + n))
        per_batch += out.results
    corpus_tokens, t_worker = out.tokens, time.perf_counter() - start
    ray_config = config.model_copy(update={"run": config.run.model_copy(
        update={"executor": "ray", "ray_workers": 2})})
    ray_exec = RayExecutor(context(ray_config, folder))
    ray_forwarded = [0]
    try:
        ray_exec.identity()
        start = time.perf_counter()
        once = ray_exec.collect(features, settings, lambda n: ray_forwarded.__setitem__(
            0, ray_forwarded[0] + n))
        t_ray = time.perf_counter() - start
    finally:
        ray_exec.close()
    return {"features": 4096, "batch": batch, "corpus_tokens": corpus_tokens,
            "worker_passes": forwarded[0] / corpus_tokens, "worker_seconds": t_worker,
            "ray_passes": ray_forwarded[0] / once.tokens, "ray_seconds": t_ray,
            "identical_results": signature(per_batch) == signature(once.results)}


def throughput(folder: Path, tokens: int) -> dict[str, Any]:
    """(b): the offline default, 1 local process vs 2 Ray actors, same tokens."""
    config = load_config(overrides={"collect.tokens": tokens, "collect.features": "all",
                                    "subject.device": "cpu"}, environ={})
    settings = collect_settings(config)
    torch.set_num_threads(2)
    local = LocalExecutor(context(config, folder))
    d_sae = local.identity().sae.d_sae
    start = time.perf_counter()
    want = local.collect(list(range(d_sae)), settings, lambda n: None)
    t_local = time.perf_counter() - start
    del local
    ray_config = config.model_copy(update={"run": config.run.model_copy(
        update={"executor": "ray", "ray_workers": 2, "ray_cpus_per_worker": 1.0})})
    start = time.perf_counter()
    ray_exec = RayExecutor(context(ray_config, folder))
    try:
        ray_exec.identity()
        loaded = time.perf_counter()
        got = ray_exec.collect(list(range(d_sae)), settings, lambda n: None)
        done = time.perf_counter()
    finally:
        ray_exec.close()
    return {"tokens": want.tokens, "local_tok_s": want.tokens / t_local,
            "ray_tok_s": got.tokens / (done - loaded),
            "ray_tok_s_with_startup": got.tokens / (done - start),
            "ray_over_local": t_local / (done - loaded),
            "identical_results": signature(want.results) == signature(got.results)}


def end_to_end(folder: Path, tokens: int, features: int) -> dict[str, Any]:
    """(c): ``autolabel run`` of the offline default (collect, explain with the local Gemma,
    score, embed, audit) on a smaller budget, local vs ``--executor ray`` (2 actors, 1 thread
    each), in fresh processes: wall times, and whether the databases are equal (examples,
    explanations, scores within 1e-6)."""
    env = {**os.environ, "AUTOLABEL_COLLECT__TOKENS": str(tokens),
           "AUTOLABEL_COLLECT__FEATURES": f"0:{features}", "AUTOLABEL_RUN__RAY_WORKERS": "2",
           "AUTOLABEL_AUDIT__OUT_DIR": str(folder / "reports")}
    out: dict[str, Any] = {"tokens": tokens, "features": features}
    for name, extra in (("local", []), ("ray", ["--executor", "ray"])):
        db = folder / f"e2e-{name}.db"
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "autolabel.cli", "--db", str(db), "--json",
                               "run", *extra], env=env, capture_output=True, text=True)
        out[f"{name}_seconds"] = time.perf_counter() - start
        out[f"{name}_status"] = (json.loads(done.stdout).get("status") if done.stdout.strip()
                                 else f"exit {done.returncode}: {done.stderr[-300:]}")
    dbs = {name: folder / f"e2e-{name}.db" for name in ("local", "ray")}
    want, got = stored(dbs["local"]), stored(dbs["ray"])
    out["same_examples"] = collected(dbs["local"]) == collected(dbs["ray"])
    out["same_explanations"] = got["explanations"] == want["explanations"]
    out["same_scores"] = same_scores(got["scores"], want["scores"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=30_000, help="tokens for (b)")
    parser.add_argument("--pass-tokens", type=int, default=1_500, help="tokens for (a)")
    parser.add_argument("--batch", type=int, default=8, help="worker mode's --batch-size")
    parser.add_argument("--skip-passes", action="store_true")
    parser.add_argument("--end-to-end", type=int, metavar="FEATURES",
                        help="only (c): `autolabel run` local vs ray over this many features")
    parser.add_argument("--e2e-tokens", type=int, default=50_000, help="tokens for (c)")
    args = parser.parse_args()
    out: dict[str, Any] = {}
    if args.end_to_end:
        with tempfile.TemporaryDirectory() as tmp:
            out["end_to_end"] = e = end_to_end(Path(tmp), args.e2e_tokens, args.end_to_end)
        print(f"(c) offline default, {e['features']} features, {e['tokens']:,} tokens: local "
              f"{e['local_seconds']:.0f} s ({e['local_status']}), --executor ray "
              f"{e['ray_seconds']:.0f} s ({e['ray_status']}); same examples "
              f"{e['same_examples']}, explanations {e['same_explanations']}, scores "
              f"{e['same_scores']}")
        print(json.dumps(out))
        return
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_passes:
            out["passes"] = p = passes(Path(tmp), args.pass_tokens, args.batch)
            print(f"(a) {p['features']:,} features, {p['corpus_tokens']:,} corpus tokens: worker "
                  f"mode (batch {p['batch']}) {p['worker_passes']:.2f} passes in "
                  f"{p['worker_seconds']:.0f} s; Ray {p['ray_passes']:.2f} pass in "
                  f"{p['ray_seconds']:.0f} s (target 1); identical results: "
                  f"{p['identical_results']}")
        out["throughput"] = t = throughput(Path(tmp), args.tokens)
        print(f"(b) {t['tokens']:,} tokens: 1 local process {t['local_tok_s']:,.0f} tok/s; "
              f"2 Ray actors {t['ray_tok_s']:,.0f} tok/s ({t['ray_over_local']:.2f}x; "
              f"{t['ray_tok_s_with_startup']:,.0f} tok/s with actor startup); identical "
              f"results: {t['identical_results']}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
