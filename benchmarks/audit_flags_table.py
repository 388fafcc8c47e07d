"""Flags of several audits side by side (one column per pair source), from their report.json.

Used for benchmarks/RESULTS.md: the offline default's flags with built-in, CrowS-Pairs and
WinoBias pairs, each audited on its own copy of the same database:

    python benchmarks/audit_flags_table.py builtin=OUT1/report.json crows=OUT2/report.json \
        winobias=OUT3/report.json

A cell reads ``T2 medium d_z -0.95 [replicated 2/5]``: the tiers that hold, the severity, the
tier-2 d_z (oriented: pole a minus pole b, so negative = higher on the male/default pole) and
the replication verdict with units replicating / units testing the category.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def load(spec: str) -> tuple[str, dict[str, Any]]:
    """``name=path`` -> (name, report facts)."""
    name, _, path = spec.partition("=")
    return name, json.loads(Path(path).read_text(encoding="utf-8"))


def cells(facts: dict[str, Any]) -> dict[tuple[int, str], str]:
    """(feature, category) -> one cell describing its flags in this report."""
    out: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for card in facts["flags"]:
        for flag in card["flags"]:
            out.setdefault((flag["feature"], flag["category"]), []).append(flag)
    return {key: describe(flags) for key, flags in out.items()}


def describe(flags: list[dict[str, Any]]) -> str:
    """Tiers, severity, tier-2 d_z and replication of one feature x category."""
    tiers = "+".join(f"T{f['tier']}" for f in sorted(flags, key=lambda f: f["tier"]))
    text = f"{tiers} {flags[0]['severity']}"
    t2 = next((f for f in flags if f["tier"] == 2), None)
    if t2 is not None:
        rep = t2.get("replication") or {}
        text += (f" d_z {t2['effect_size']:+.2f} [{rep.get('status', 'n/a')} "
                 f"{rep.get('n_replicated', 0)}/{rep.get('n_tested', 0)}]")
    return text


def table(named: list[tuple[str, dict[str, Any]]]) -> str:
    """Markdown: one row per flagged (feature, category), one column per audit."""
    per = [(name, cells(facts)) for name, facts in named]
    keys = sorted({k for _n, c in per for k in c})
    lines = ["| feature | category | " + " | ".join(n for n, _c in per) + " |",
             "|---|---|" + "---|" * len(per)]
    for feat, cat in keys:
        row = [c.get((feat, cat), "—") for _n, c in per]
        lines.append(f"| default:{feat} | {cat} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def summary(named: list[tuple[str, dict[str, Any]]]) -> str:
    """Markdown: pairs, oriented share and flag counts per audit."""
    lines = ["| pairs | pairs incl. neutral control | oriented / unoriented (tested "
             "categories) | flagged features | tier-2 flags by replication | audit s | "
             "forward s |",
             "|---|---|---|---|---|---|---|"]
    for name, f in named:
        s, cats = f["summary"], f["results"]["per_category"]
        ori = sum(c["n_oriented"] for c in cats)
        unori = sum(c["n_unoriented"] for c in cats)
        reps = ", ".join(f"{v} {k}" for k, v in sorted(s["tier2_replication"].items())) or "—"
        lines.append(f"| {name} | {s['n_pairs']} | {ori} / {unori} | {s['flagged_features']} "
                     f"| {reps} | {s['seconds']} | {s['timings']['forward_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="+", help="name=path/to/report.json")
    named = [load(spec) for spec in parser.parse_args().reports]
    print(summary(named))
    print()
    print(table(named))


if __name__ == "__main__":
    main()
