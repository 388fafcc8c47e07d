"""Trust checks of issue 13 on real data: wording invariance, the winner's curse, trusted labels.

Three measurements, each against a baseline computed in the same process:

``repetition``
    The issue's ``default:5`` pair (the generation loop ``the 0th month of the month …`` vs the
    token-statistics label) and their repeated / word-doubled / top-token-padded variants,
    scored on a feature's test windows with the offline default's embedding simulator
    (all-MiniLM-L6-v2) and optionally the local-logprob one (``--llm``). Baseline: the same
    simulator fed the raw text (what scoring did before ``autolabel.wording``); measured: the
    real :class:`~autolabel.scoring.SimulationScorer`, which canonicalises first.
``winners-curse``
    On every feature of a database collected with a validation split, ``--rounds`` × k = 8
    candidates of random words (exchangeable: none is better than another by construction).
    Chosen on validation by the real rule (:func:`autolabel.store.labels.choose`), the chosen
    candidate's test score minus candidate 0's test score must be ~0 (|z| < 3); chosen on test
    (the baseline: what autolabel did before), the same statistic is inflated.
``labels``
    The share of features whose label (:func:`autolabel.store.labels.feature_labels`) is
    ``trusted``, by explainer, with verdict and ``selected_on`` counts.

    python benchmarks/bench_trust.py repetition --db /tmp/base_pristine.db --feature 5
    python benchmarks/bench_trust.py repetition --llm --max-windows 8     # + local-logprob
    python benchmarks/bench_trust.py winners-curse --db run.db --rounds 4
    python benchmarks/bench_trust.py labels --db run.db

Databases are read through a private copy (``sqlite3`` backup), never written.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sqlite3
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from sqlalchemy import text as sql

from autolabel.db import unpack_array
from autolabel.examples import TextExample
from autolabel.scoring import EmbeddingSimulator, SimulationScorer, Simulator
from autolabel.scoring.metrics import normalise_truth, pooled_pearson
from autolabel.store.labels import choose

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for the label variants the wording-invariance test uses

from tests.scoring.test_wording_invariance import (  # noqa: E402
    LOOP,
    TOKEN_LABEL,
    TOP_TOKENS,
)
from tests.scoring.test_wording_invariance import variants as label_variants  # noqa: E402

VARIANT_NAMES = ("as written", "twice", "5 times", "each word doubled", "+ top tokens x6")

K = 8


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("check", choices=["repetition", "winners-curse", "labels"])
    ap.add_argument("--db", type=Path, default=Path("/tmp/base_pristine.db"))
    ap.add_argument("--feature", type=int, default=5, help="feature index (repetition)")
    ap.add_argument("--llm", action="store_true", help="also the local-logprob simulator")
    ap.add_argument("--max-windows", type=int, default=0, help="first N test windows (0=all)")
    ap.add_argument("--rounds", type=int, default=4, help="k=8 draws per feature")
    ap.add_argument("--model", default="gemma-3-270m", help="subject tokenizer / local LLM")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def private_copy(db: Path) -> Path:
    """A consistent copy of the database (WAL included) in a temporary directory."""
    dst = Path(tempfile.mkdtemp(prefix="bench_trust_")) / db.name
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as src, sqlite3.connect(dst) as out:
        src.backup(out)
    return dst


def windows(conn: sqlite3.Connection, index: int, decode: Any,
            ) -> tuple[dict[str, list[TextExample]], float]:
    """A feature's held-out windows per split (current collection) and its train top max."""
    rows = conn.execute(
        "SELECT e.split, e.kind, e.document_id, e.token_ids, e.activations, e.max_activation "
        "FROM examples e JOIN features f ON f.id = e.feature_id AND "
        'e.collection_id = f.collection_id WHERE f."index" = ? '
        "ORDER BY e.split, e.kind, e.rank", (index,)).fetchall()
    out: dict[str, list[TextExample]] = {}
    scale = 0.0
    for split, kind, doc, ids, acts, top in rows:
        if split == "train":
            scale = max(scale, top) if kind == "top" else scale
            continue
        toks = [decode(i) for i in unpack_array(ids, "int32").tolist()]
        out.setdefault(split, []).append(
            TextExample(toks, unpack_array(acts, "float32").tolist(), doc, kind, split))
    return out, scale


def decoder(model: str) -> Any:
    """Token id -> text with the subject model's tokenizer (memoised)."""
    from autolabel.subject import load_tokenizer  # transformers: only when a DB is read

    tok, cache = load_tokenizer(model), {}

    def decode(i: int) -> str:
        if i not in cache:
            cache[i] = tok.decode([i])
        return cache[i]
    return decode


def variants(label: str, top: Sequence[str]) -> dict[str, str]:
    """The test's label variants (``tests/scoring/test_wording_invariance.py``), named."""
    return dict(zip(VARIANT_NAMES, label_variants(label, top), strict=True))


def raw_score(sim: Simulator, text: str, seqs: Sequence[TextExample], scale: float) -> float:
    """The baseline: the simulator fed the text as written (no canonicalisation)."""
    preds = sim.predict(text, [s.tokens for s in seqs])
    value = pooled_pearson([normalise_truth(s.activations, scale) for s in seqs], preds)
    return float("nan") if value is None else float(value)


def simulators(args: argparse.Namespace) -> list[Simulator]:
    from autolabel.embed import get_embedder

    sims: list[Simulator] = [EmbeddingSimulator(get_embedder("all-MiniLM-L6-v2"))]
    if args.llm:
        from autolabel.llm import LocalClient
        from autolabel.scoring import LocalLogprobSimulator

        sims.append(LocalLogprobSimulator(LocalClient(args.model)))
    return sims


def repetition(args: argparse.Namespace) -> None:
    with sqlite3.connect(private_copy(args.db)) as conn:
        held, scale = windows(conn, args.feature, decoder(args.model))
    seqs = held.get("test", [])[: args.max_windows or None]
    print(f"feature {args.feature}: {len(seqs)} test windows, scale {scale:.3f}")
    groups = {"token label": variants(TOKEN_LABEL, TOP_TOKENS),
              "loop": {"as written": LOOP, "short": "the 0th month of the month of the month",
                       "+10 loops": LOOP + " of the month" * 10,
                       "+ top tokens x6": LOOP + " month" * 6}}
    for sim in simulators(args):
        scorer = SimulationScorer(sim)
        print(f"\n{sim.name}\n| label | variant | raw (baseline) | canonical (scored) |")
        print("|---|---|---|---|")
        for group, texts in groups.items():
            raw, canon = [], []
            for name, text in texts.items():
                raw.append(raw_score(sim, text, seqs, scale))
                canon.append(scorer.score(text, seqs, scale).value)
                print(f"| {group} | {name} | {raw[-1]:+.3f} | {canon[-1]:+.3f} |")
            print(f"| {group} | **spread** | {np.ptp(raw):.3f} | {np.ptp(canon):.3f} |")


def random_texts(vocab: Sequence[str], rng: np.random.Generator) -> list[str]:
    return [" ".join(rng.choice(vocab, size=3)) for _ in range(K)]


def z_score(diffs: Sequence[float]) -> float:
    arr = np.asarray(diffs, dtype=float)
    return float(arr.mean() / (arr.std(ddof=1) / math.sqrt(len(arr))))


def winners_curse(args: argparse.Namespace) -> None:
    decode = decoder(args.model)
    with sqlite3.connect(private_copy(args.db)) as conn:
        indices = [i for (i,) in conn.execute('SELECT "index" FROM features ORDER BY "index"')]
        held = {i: windows(conn, i, decode) for i in indices}
    vocab = sorted({t.strip().lower() for split, _ in held.values() for s in split.get("test", [])
                    for t in s.tokens if t.strip().isalpha() and len(t.strip()) > 2})
    usable = [i for i in indices if held[i][0].get("validation") and held[i][0].get("test")]
    print(f"{len(usable)}/{len(indices)} features with validation and test windows; "
          f"vocabulary of {len(vocab)} words; k = {K}, {args.rounds} rounds per feature")
    if not usable:
        raise SystemExit("no validation split in this database: re-collect it first")
    from autolabel.embed import get_embedder

    scorer = SimulationScorer(EmbeddingSimulator(get_embedder("all-MiniLM-L6-v2")))
    rng = np.random.default_rng(args.seed)
    chosen, on_test = [], []
    for i in usable:
        splits, scale = held[i]
        for _ in range(args.rounds):
            rows = []
            for c, text in enumerate(random_texts(vocab, rng)):
                t = scorer.score(text, splits["test"], scale).value
                v = scorer.score(text, splits["validation"], scale).value
                rows.append((SimpleNamespace(id=c, status="ok"),
                             SimpleNamespace(value=t, validation_value=v)))
            if any(s.value is None or s.validation_value is None for _, s in rows):
                continue
            pick = choose(rows)  # type: ignore[arg-type]
            assert pick is not None and pick[2] == "validation"
            base = rows[0][1].value
            chosen.append(pick[1].value - base)
            on_test.append(max(s.value for _, s in rows) - base)
        if len(chosen) > 2:
            print(f"# after feature {i}: {len(chosen)} draws; on validation "
                  f"{np.mean(chosen):+.4f} (z {z_score(chosen):+.2f}), on test "
                  f"{np.mean(on_test):+.4f} (z {z_score(on_test):+.2f})", flush=True)
    print(f"{len(chosen)} complete draws of {K}")
    print("| selection | mean test score − a single candidate's | z |\n|---|---|---|")
    print(f"| on validation (autolabel) | {np.mean(chosen):+.4f} | {z_score(chosen):+.2f} |")
    print(f"| on test (baseline, the old rule) | {np.mean(on_test):+.4f} | "
          f"{z_score(on_test):+.2f} |")


def labels(args: argparse.Namespace) -> None:
    from autolabel.db import open_database
    from autolabel.store.labels import feature_labels

    copy = private_copy(args.db)
    database = open_database(f"sqlite:///{copy}")
    with database.session() as session:
        ids = [i for (i,) in session.execute(sql("SELECT id FROM features ORDER BY id"))]
        labs = list(feature_labels(session, ids).values())
    database.close()
    shutil.rmtree(copy.parent, ignore_errors=True)
    verdicts = Counter(lab.verdict for lab in labs)
    print(f"{len(labs)} features; verdicts: {dict(sorted(verdicts.items()))}; selected_on: "
          f"{dict(Counter(lab.selected_on or '-' for lab in labs))}")
    print("| explainer | labels | trusted | weak | at_floor |\n|---|---|---|---|---|")
    for explainer in sorted({lab.explainer or "-" for lab in labs}):
        mine = [lab for lab in labs if (lab.explainer or "-") == explainer]
        c = Counter(lab.verdict for lab in mine)
        print(f"| {explainer} | {len(mine)} | {c['trusted']} | {c['weak']} | {c['at_floor']} |")
    trusted = verdicts["trusted"]
    print(f"trusted: {trusted}/{len(labs)} = {trusted / max(1, len(labs)):.1%}")


def main() -> None:
    args = parse_args()
    {"repetition": repetition, "winners-curse": winners_curse, "labels": labels}[args.check](args)


if __name__ == "__main__":
    main()
