"""Search benchmark: the persistent HNSW index against today's exact scan, at 10k-1M labels.

    python benchmarks/bench_search.py --sizes 1000000 --queries 40

For each size, in one run:

* **data**: synthetic explanations from templates over a vocabulary read from the stdlib's
  ``pydoc_data.topics`` (Zipf-like word frequencies), inserted with executemany so the FTS5
  triggers index them as in production, each with a simulation score and verdict (the
  labels every result shows). Each text's vector is the normalised sum of the real
  all-MiniLM-L6-v2 vectors of its five content words (so vectors live in the model's space and
  a real query embedding is meaningful), stored under the model's name.
* **baseline**: today's exact scan (the previous release's path): read every vector row into a
  float32 matrix once per process, then one mat-vec + argpartition per query.
* **index**: build time and size of the usearch file, the time to open it (memory-mapped), and
  recall@10 of ``search(mode="semantic")`` against the exact scan on the same queries (plain,
  and tie-aware: a result scoring at least the exact 10th is correct).
* **latency**: in-process p50/p95 per mode with the real query embedding; a warm
  ``autolabel serve`` (uvicorn in a subprocess, HTTP keep-alive) p50/p95 for semantic and
  hybrid; the CLI ``autolabel search --mode semantic`` from process start to printed results.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np

from autolabel import db as dbm
from autolabel.embed import LOCAL_MODEL, SMALL_BATCH, LocalEmbedder, normalize_rows
from autolabel.search import clear_index_cache, index_dir, open_index, search, sync_index
from autolabel.store.search import vector_rows

TEMPLATES = [
    "{a} {b} words such as {c}, {d} and {e}",
    "tokens about {a} and {b}, especially {c} near {d}",
    "the {a} token in {b} contexts like {c}",
    "mentions of {a} {b} or {c} in {d} text",
    "{a} followed by {b}; fires on {c} and {d}",
]
N_SLOTS = 5
CHUNK = 100_000


def vocabulary(limit: int = 6000) -> list[str]:
    import pydoc_data.topics as topics  # the stdlib's Python docs: an always-present corpus

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


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


# ---------------------------------------------------------------------------------------------
# Data


def build_database(path: Path, n: int, vocab: list[str], word_vecs: np.ndarray,
                   rng: np.random.Generator) -> dict[str, float]:
    database = dbm.open_database(f"sqlite:///{path}")
    texts, ids = generate(n, vocab, rng)
    n_saes = 4
    with database.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO saes (id, name, source, hook_name, layer, d_in, d_sae, architecture,"
            " content_hash, created_at) VALUES (?, ?, 'bench', 'h', ?, 640, ?, 'topk', ?, ?)",
            [(i + 1, f"bench-l{3 * (i + 1)}", 3 * (i + 1), n, f"hash{i}", "2026-01-01")
             for i in range(n_saes)])
        for start in range(0, n, CHUNK):
            conn.exec_driver_sql(
                'INSERT INTO features (id, sae_id, "index", n_tokens, n_firing, density,'
                " max_activation, mean_activation, mean_firing_activation, updated_at)"
                " VALUES (?, ?, ?, 0, 0, ?, 0, 0, 0, '2026-01-01')",
                [(i + 1, i % n_saes + 1, i // n_saes, 0.001)
                 for i in range(start, min(n, start + CHUNK))])
    t0 = time.perf_counter()
    for start in range(0, n, CHUNK):
        with database.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO explanations (id, feature_id, explainer, llm_model, prompt_hash,"
                " candidate, text, status, settings, is_best, created_at)"
                " VALUES (?, ?, ?, 'm', '', 0, ?, 'ok', '{}', 0, '2026-01-01')",
                [(i + 1, i + 1, "llm" if i % 3 else "tokens", texts[i])
                 for i in range(start, min(n, start + CHUNK))])
    t_fts = time.perf_counter() - t0
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        vecs = normalize_rows(word_vecs[ids[start:stop]].sum(axis=1))
        with database.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO embeddings (explanation_id, model, dim, vector, created_at)"
                " VALUES (?, ?, 384, ?, '2026-01-01')",
                [(start + j + 1, LOCAL_MODEL, vecs[j].astype("<f4").tobytes())
                 for j in range(stop - start)])
    database.close()
    print(f"insert: explanations + FTS5 triggers {n / t_fts:,.0f}/s ({t_fts:.1f} s)", flush=True)
    add_scores(path, n)
    return {"fts_insert_per_s": n / t_fts}


VERDICT_SHARES = {"trusted": 0.3, "weak": 0.3, "at_floor": 0.3, "unscored": 0.1}


def add_scores(path: Path, n: int) -> None:
    """One simulation score per explanation, with floor, null, CI and a verdict (shares as in
    VERDICT_SHARES), as the score stage writes them: every search result's label is read
    from these rows, so a benchmark without them would leave that cost out. Skipped when
    the database already has them (``--reuse``)."""
    database = dbm.open_database(f"sqlite:///{path}")
    with database.engine.connect() as conn:
        if conn.exec_driver_sql("SELECT COUNT(*) FROM scores").scalar():
            database.close()
            return
    rng = np.random.default_rng(1)  # its own stream: the texts and queries stay the same
    names = list(VERDICT_SHARES)
    t0 = time.perf_counter()
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        values = rng.uniform(0.0, 0.8, size=stop - start)
        verdicts = rng.choice(len(names), size=stop - start, p=list(VERDICT_SHARES.values()))
        with database.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO scores (explanation_id, scorer, simulator, value, floor_value,"
                " n_examples, status, details, created_at, validation_value, null_mean,"
                " null_p95, null_n, ci_low, ci_high, verdict) VALUES (?, 'simulation', 'sim',"
                " ?, 0.05, 40, 'ok', '{}', '2026-01-01', ?, 0.0, 0.1, 16, ?, ?, ?)",
                [(start + j + 1, float(v), float(v), float(v) - 0.1, float(v) + 0.1,
                  names[k]) for j, (v, k) in enumerate(zip(values, verdicts, strict=True))])
    database.close()
    print(f"insert: {n:,} scores with verdicts in {time.perf_counter() - t0:.1f} s", flush=True)


# ---------------------------------------------------------------------------------------------
# Today's exact scan (the baseline)


class ExactScan:
    """The previous release's semantic path: every vector in one float32 matrix per process."""

    def __init__(self, database: dbm.Database) -> None:
        ids: list[int] = []
        blobs: list[bytes] = []
        with database.engine.connect() as conn:
            for eid, _fid, _sid, _explainer, _dim, blob in vector_rows(conn, LOCAL_MODEL):
                ids.append(eid)
                blobs.append(blob)
        self.ids = np.asarray(ids, dtype=np.int64)
        self.matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(ids), -1).copy()

    def top(self, q: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        scores = self.matrix @ q
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return self.ids[top], scores


def recall(database: dbm.Database, scan: ExactScan, queries: list[str],
           embedder: LocalEmbedder) -> tuple[float, float]:
    """Mean recall@10 of semantic search vs the exact scan: plain and tie-aware."""
    plain, tie_aware = [], []
    for query in queries:
        q = embedder.embed([query])[0]
        exact_ids, scores = scan.top(q)
        hits = search(database, query, mode="semantic", limit=10, embedder=embedder)
        got = np.asarray([h.explanation_id for h in hits], dtype=np.int64)
        plain.append(len(set(got.tolist()) & set(exact_ids.tolist())) / 10)
        kth = scores[np.searchsorted(scan.ids, exact_ids[-1])]
        got_scores = scores[np.searchsorted(scan.ids, got)]
        tie_aware.append(float(np.sum(got_scores >= kth - 1e-6)) / 10)
    return float(np.mean(plain)), float(np.mean(tie_aware))


# ---------------------------------------------------------------------------------------------
# Server and CLI


def serve_main(db_path: str, port: int) -> None:
    """Child process: ``autolabel serve``'s app over the bench database, with uvicorn."""
    from autolabel.serve import open_server, serve

    database = dbm.open_database(f"sqlite:///{db_path}", migrate=False)
    app = open_server(database, lambda model: None)
    serve(app, port=port)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_latency(db_path: Path, queries: list[str], repeat: int) -> dict[str, list[float]]:
    """p50 inputs for a warm server: one process, HTTP keep-alive, real query embedding."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-db", str(db_path),
                             "--port", str(port)], stderr=subprocess.DEVNULL)
    try:
        conn = _wait_for(port, 600)
        out: dict[str, list[float]] = {}
        for mode in ("semantic", "hybrid", "keyword"):
            def one(q: str, mode: str = mode) -> None:
                conn.request("GET", f"/api/search?q={quote(q)}&mode={mode}&limit=10")
                body = conn.getresponse().read()
                assert json.loads(body)["count"] >= 0
            one(queries[0])  # warm
            out[mode] = [timed(lambda q=q: one(q), 1)[0] for q in queries[:repeat]]
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait_for(port: int, timeout: float) -> http.client.HTTPConnection:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", "/api")
            conn.getresponse().read()
            return conn
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("server did not start")


def cli_times(db_path: Path, queries: list[str], runs: int) -> list[float]:
    """Wall seconds of ``autolabel search --mode semantic`` from process start to exit."""
    exe = Path(sys.executable).with_name("autolabel")
    out = []
    for query in queries[:runs]:
        t = time.perf_counter()
        subprocess.run([str(exe), "--db", str(db_path), "search", query, "--mode", "semantic"],
                       check=True, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - t)
    return out


# ---------------------------------------------------------------------------------------------


def run_size(n: int, vocab: list[str], word_vecs: np.ndarray, embedder: LocalEmbedder,
             args: argparse.Namespace, workdir: Path, rng: np.random.Generator) -> dict[str, float]:
    print(f"\n=== {n:,} explanations ===", flush=True)
    path = workdir / f"bench_{n}.db"
    if args.reuse and path.exists():  # the same seed made it: only the index is rebuilt
        results: dict[str, float] = {"fts_insert_per_s": float("nan")}
        generate(n, vocab, rng)  # keep the random stream where a fresh build leaves it
        add_scores(path, n)
        if not args.reuse_index:
            for stale in path.parent.glob(f"{path.name}.vectors/*"):
                stale.unlink()
    else:
        results = build_database(path, n, vocab, word_vecs, rng)
    database = dbm.open_database(f"sqlite:///{path}")
    qids = rng.choice(min(len(vocab), 400), size=(args.queries, 2))
    queries = [f"{vocab[a]} {vocab[b]}" for a, b in qids]

    t0 = time.perf_counter()
    scan = ExactScan(database)
    t_load = time.perf_counter() - t0
    q = embedder.embed([queries[0]])[0]
    scan_top = scan.top
    t_scan = timed(lambda: scan_top(q), args.queries)
    print(f"baseline exact scan: matrix load {t_load:.2f} s ({scan.matrix.nbytes / 2**20:,.0f}"
          f" MiB) once per process; top-10 p50 {pct(t_scan, 50):.1f} ms", flush=True)

    t0 = time.perf_counter()
    meta = sync_index(database, LOCAL_MODEL)
    t_build = time.perf_counter() - t0
    folder = index_dir(database)
    size = sum(p.stat().st_size for p in folder.glob("*.usearch")) if folder else 0
    print(f"index build: {t_build:.1f} s, {meta.size if meta else 0:,} vectors, "
          f"{size / 2**20:,.0f} MiB on disk", flush=True)
    clear_index_cache()
    with database.engine.connect() as conn:
        t_open = timed(lambda: (clear_index_cache(), open_index(database, LOCAL_MODEL, conn)), 5)
    print(f"index open (memory-mapped, with the table check): p50 {pct(t_open, 50):.1f} ms",
          flush=True)

    plain, ties = recall(database, scan, queries, embedder)
    print(f"recall@10 vs exact scan: {plain:.3f} (tie-aware {ties:.3f})", flush=True)
    results.update(load_s=t_load, build_s=t_build, open_ms=pct(t_open, 50), recall=plain,
                   recall_ties=ties, scan_ms=pct(t_scan, 50))
    del scan
    gc.collect()

    t_embed = timed(lambda: embedder.embed([queries[1]]), args.queries)
    print(f"  query embedding (numpy MiniLM) p50 {pct(t_embed, 50):.1f} ms", flush=True)
    qi = iter(range(10**9))
    for mode in ("keyword", "semantic", "hybrid"):
        search(database, queries[0], mode=mode, embedder=embedder)  # warm
        lat = timed(lambda m=mode: search(database, queries[next(qi) % len(queries)], mode=m,
                                          limit=10, embedder=embedder), args.queries)
        results[mode] = pct(lat, 50)
        print(f"  in-process {mode:8s} p50 {pct(lat, 50):7.1f} ms   p95 {pct(lat, 95):7.1f} ms",
              flush=True)
    database.close()
    clear_index_cache()

    served = server_latency(path, queries, args.queries)
    for mode, lat in served.items():
        results[f"server_{mode}"] = pct(lat, 50)
        print(f"  warm server {mode:8s} p50 {pct(lat, 50):7.1f} ms   p95 {pct(lat, 95):7.1f} ms",
              flush=True)
    cli = cli_times(path, queries, args.cli_runs)
    results["cli_s"] = float(np.median(cli))
    print("  CLI search --mode semantic: " + ", ".join(f"{c:.2f}" for c in cli)
          + f" s (median {np.median(cli):.2f} s)", flush=True)
    if not args.keep:
        for p in workdir.glob(f"bench_{n}.db*"):
            if p.is_dir():
                for child in p.iterdir():
                    child.unlink()
                p.rmdir()
            else:
                p.unlink()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the databases and indexes")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse a kept database of the same size (rebuilds its index)")
    parser.add_argument("--reuse-index", action="store_true",
                        help="with --reuse: keep its saved index too (build time then ~0)")
    parser.add_argument("--serve-db", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_db:
        serve_main(args.serve_db, args.port)
        return 0
    print(f"load: {os.getloadavg()}", flush=True)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    vocab = vocabulary()
    embedder = LocalEmbedder()
    t0 = time.perf_counter()
    # Small batches, so the numpy MiniLM does it: once sentence-transformers is loaded in a
    # process, LocalEmbedder embeds queries with it too (28.2 ms against 14.6 ms in
    # RESULTS.md), and the in-process figures below would no longer be what the CLI and the
    # server do.
    word_vecs = np.concatenate([embedder.embed(vocab[i:i + SMALL_BATCH])
                                for i in range(0, len(vocab), SMALL_BATCH)])
    rate = len(vocab) / (time.perf_counter() - t0)
    print(f"vocabulary {len(vocab)} words embedded (model load included): {rate:,.0f}/s",
          flush=True)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="autolabel-bench-"))
    summary = {n: run_size(n, vocab, word_vecs, embedder, args, workdir, rng) for n in sizes}
    print("\n=== summary ===")
    for n, r in summary.items():
        print(f"{n:>10,}: recall@10 {r['recall']:.3f} (ties {r['recall_ties']:.3f}); "
              f"p50 ms keyword {r['keyword']:.1f} semantic {r['semantic']:.1f} hybrid "
              f"{r['hybrid']:.1f}; server semantic {r['server_semantic']:.1f} hybrid "
              f"{r['server_hybrid']:.1f}; exact scan {r['scan_ms']:.1f} ms after a "
              f"{r['load_s']:.1f} s load; index build {r['build_s']:.0f} s, open "
              f"{r['open_ms']:.1f} ms; CLI {r['cli_s']:.2f} s")
        print(f"{'':>10}  ratios vs exact scan: semantic p50 / scan p50 = "
              f"{r['semantic'] / r['scan_ms']:.2f}; index open / matrix load = "
              f"{r['open_ms'] / 1000 / r['load_s']:.4f}")
    print(f"load: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
