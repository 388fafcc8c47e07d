"""Search benchmark: latency per mode and indexing throughput at 10k / 100k / 1M explanations.

    python benchmarks/bench_search.py --sizes 10000,100000,1000000

Synthetic explanations come from templates over a vocabulary read from the stdlib's
``pydoc_data.topics`` (Zipf-like word frequencies). Rows go into a temp SQLite database with
executemany in large transactions, so the FTS5 triggers index them as in production (that is the
"FTS insert" throughput). Vectors for scale are hashed bag-of-words (HashEmbedder vectors of the
words, summed per text, normalised), inserted directly; the *query* is embedded by the real
all-MiniLM-L6-v2 on every semantic / hybrid query, so its cost is included. Embedding throughput
of the real model is measured on a small sample.
"""

from __future__ import annotations

import argparse
import gc
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from autolabel import db as dbm
from autolabel.embed import HashEmbedder, LocalEmbedder, normalize_rows
from autolabel.search import clear_index_cache, search, vector_index

MODEL_NAME = "bench-bow"
TEMPLATES = [
    "{a} {b} words such as {c}, {d} and {e}",
    "tokens about {a} and {b}, especially {c} near {d}",
    "the {a} token in {b} contexts like {c}",
    "mentions of {a} {b} or {c} in {d} text",
    "{a} followed by {b}; fires on {c} and {d}",
]
N_SLOTS = 5


class QueryEmbedder:
    """The real MiniLM encodes each query (its cost counts); named like the stored vectors."""

    name = MODEL_NAME
    dim = 384

    def __init__(self) -> None:
        self.inner = LocalEmbedder()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed(texts)


def vocabulary(limit: int = 6000) -> list[str]:
    import pydoc_data.topics as topics

    words: dict[str, int] = {}
    for body in topics.topics.values():
        for w in re.findall(r"[a-z]{3,12}", body.lower()):
            words[w] = words.get(w, 0) + 1
    ranked = sorted(words, key=lambda w: -words[w])
    return ranked[50:50 + limit]  # skip the very commonest (function words)


def generate(n: int, vocab: list[str], rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """n texts and their [n, N_SLOTS] word ids (Zipf-like choice)."""
    weights = 1.0 / (np.arange(len(vocab)) + 10.0)
    weights /= weights.sum()
    ids = rng.choice(len(vocab), size=(n, N_SLOTS), p=weights)
    tmpl = rng.integers(0, len(TEMPLATES), size=n)
    texts = [TEMPLATES[t].format(a=vocab[r[0]], b=vocab[r[1]], c=vocab[r[2]], d=vocab[r[3]],
                                 e=vocab[r[4]]) for t, r in zip(tmpl, ids, strict=True)]
    return texts, ids


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def run_size(n: int, vocab: list[str], word_vecs: np.ndarray, query_embedder: QueryEmbedder,
             n_queries: int, workdir: Path, rng: np.random.Generator) -> dict[str, float]:
    print(f"\n=== {n:,} explanations ===", flush=True)
    url = f"sqlite:///{workdir / f'bench_{n}.db'}"
    database = dbm.open_database(url)
    texts, ids = generate(n, vocab, rng)
    n_saes = 4
    with database.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO saes (id, name, source, hook_name, layer, d_in, d_sae, architecture,"
            " content_hash, created_at) VALUES (?, ?, 'bench', 'h', ?, 640, ?, 'topk', ?, ?)",
            [(i + 1, f"bench-l{3 * (i + 1)}", 3 * (i + 1), n, f"hash{i}", "2026-01-01")
             for i in range(n_saes)],
        )
    chunk = 100_000
    t0 = time.perf_counter()
    with database.engine.begin() as conn:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            conn.exec_driver_sql(
                'INSERT INTO features (id, sae_id, "index", n_tokens, n_firing, density,'
                " max_activation, mean_activation, mean_firing_activation, updated_at)"
                " VALUES (?, ?, ?, 0, 0, ?, 0, 0, 0, '2026-01-01')",
                [(i + 1, i % n_saes + 1, i // n_saes, 0.001) for i in range(start, stop)],
            )
    t_feat = time.perf_counter() - t0
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        with database.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO explanations (id, feature_id, explainer, llm_model, prompt_hash,"
                " candidate, text, status, settings, is_best, created_at)"
                " VALUES (?, ?, ?, 'm', '', 0, ?, 'ok', '{}', 0, '2026-01-01')",
                [(i + 1, i + 1, "llm" if i % 3 else "tokens", texts[i])
                 for i in range(start, stop)],
            )
    t_fts = time.perf_counter() - t0
    print(f"insert: features {n / t_feat:,.0f}/s; explanations + FTS5 triggers "
          f"{n / t_fts:,.0f} explanations/s ({t_fts:.1f} s)", flush=True)

    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        vecs = normalize_rows(word_vecs[ids[start:stop]].sum(axis=1))
        with database.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO embeddings (explanation_id, model, dim, vector, created_at)"
                " VALUES (?, ?, 384, ?, '2026-01-01')",
                [(start + j + 1, MODEL_NAME, vecs[j].astype("<f4").tobytes())
                 for j in range(stop - start)],
            )
        del vecs
    t_vec = time.perf_counter() - t0
    print(f"insert: synthetic vectors {n / t_vec:,.0f}/s ({t_vec:.1f} s)", flush=True)
    del texts
    gc.collect()

    t0 = time.perf_counter()
    index = vector_index(database, MODEL_NAME)
    t_load = time.perf_counter() - t0
    print(f"matrix load (once per process): {t_load:.2f} s, "
          f"{index.matrix.nbytes / 2**20:,.0f} MiB", flush=True)

    qids = rng.choice(min(len(vocab), 400), size=(n_queries, 2))
    queries = [f"{vocab[a]} {vocab[b]}" for a, b in qids]
    qi = iter(range(10**9))

    def next_query() -> str:
        return queries[next(qi) % len(queries)]

    results: dict[str, float] = {}
    q = query_embedder.embed(["warm up"])[0]
    t_embed = timed(lambda: query_embedder.embed([next_query()]), n_queries)
    t_scan = timed(lambda: index.matrix @ q, n_queries)
    t_check = timed(lambda: vector_index(database, MODEL_NAME), n_queries)
    print(f"  parts: query embedding p50 {pct(t_embed, 50):.1f} ms; mat-vec p50 "
          f"{pct(t_scan, 50):.1f} ms; cache check p50 {pct(t_check, 50):.1f} ms", flush=True)
    for mode in ("keyword", "semantic", "hybrid"):
        search(database, next_query(), mode=mode, embedder=query_embedder)  # warm
        lat = timed(lambda m=mode: search(database, next_query(), mode=m, limit=10,
                                          embedder=query_embedder), n_queries)
        results[mode] = pct(lat, 50)
        print(f"  {mode:8s} p50 {pct(lat, 50):7.1f} ms   p95 {pct(lat, 95):7.1f} ms", flush=True)
    from autolabel.search import SearchFilters

    lat = timed(lambda: search(database, next_query(), mode="hybrid", embedder=query_embedder,
                               filters=SearchFilters(layer=6, explainer="llm")), n_queries)
    print(f"  hybrid+filters(layer, explainer) p50 {pct(lat, 50):.1f} ms  "
          f"p95 {pct(lat, 95):.1f} ms", flush=True)
    results["fts_insert_per_s"] = n / t_fts
    database.close()
    clear_index_cache()
    gc.collect()
    for p in workdir.glob(f"bench_{n}.db*"):
        p.unlink()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--sample", type=int, default=512, help="texts for model throughput")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    vocab = vocabulary()
    word_vecs = HashEmbedder().embed(vocab)
    t0 = time.perf_counter()
    query_embedder = QueryEmbedder()
    print(f"vocabulary {len(vocab)} words; MiniLM load {time.perf_counter() - t0:.1f} s")

    sample, _ = generate(args.sample, vocab, rng)
    query_embedder.inner.embed(sample[:16])
    t0 = time.perf_counter()
    query_embedder.inner.embed(sample)
    embed_rate = args.sample / (time.perf_counter() - t0)
    print(f"embedding throughput (all-MiniLM-L6-v2, batch 64, CPU): {embed_rate:,.0f} "
          "explanations/s", flush=True)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="autolabel-bench-"))
    summary = {n: run_size(n, vocab, word_vecs, query_embedder, args.queries, workdir, rng)
               for n in sizes}
    print("\n=== summary (p50 ms) ===")
    print(f"{'size':>10} {'keyword':>9} {'semantic':>9} {'hybrid':>9} {'FTS ins/s':>10} "
          f"{'FTS/embed':>10}")
    for n, r in summary.items():
        print(f"{n:>10,} {r['keyword']:9.1f} {r['semantic']:9.1f} {r['hybrid']:9.1f} "
              f"{r['fts_insert_per_s']:10,.0f} {r['fts_insert_per_s'] / embed_rate:9.0f}x")
    if len(summary) > 1:
        lo, hi = min(summary), max(summary)
        for mode in ("keyword", "semantic", "hybrid"):
            print(f"{mode}: {hi // lo}x more rows -> "
                  f"{summary[hi][mode] / summary[lo][mode]:.1f}x p50 latency")
    return 0


if __name__ == "__main__":
    sys.exit(main())
