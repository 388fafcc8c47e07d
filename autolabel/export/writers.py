"""Records to files: the safe output stream, lossless JSONL and one-row-per-explanation CSV."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from autolabel.errors import InputError
from autolabel.safety import csv_cell

CSV_HEADER = ["feature", "sae", "index", "density", "max_activation", "explainer",
              "llm_model", "candidate", "status", "is_best", "text", "simulation_score",
              "simulation_floor", "simulator", "validation_score", "null_p95", "ci_low",
              "ci_high", "verdict", "selected_on"]


@contextlib.contextmanager
def output(out: Path | None) -> Iterator[IO[str]]:
    """A text stream for ``out`` (stdout when None); files are written to a temporary name and
    renamed on success, so an interrupted export never leaves a truncated file behind."""
    if out is None:
        yield sys.stdout
        return
    tmp = out.with_name(out.name + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            yield fh
        os.replace(tmp, out)
    except OSError as exc:
        raise InputError(f"cannot write {out} ({exc.strerror}); choose a writable --out path"
                         ) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_jsonl(records: Iterator[dict[str, Any]], out: Path | None) -> None:
    """One compact JSON line per feature (NaN kept as NaN: lossless, Python reads it back)."""
    with output(out) as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")


def write_csv(records: Iterator[dict[str, Any]], out: Path | None) -> None:
    """One row per explanation with its simulation score, floor, validation score, null p95,
    CI and verdict (``selected_on`` on the feature's label row). Every text cell is
    neutralised against formula injection (LLM replies and corpus names are untrusted)."""
    with output(out) as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_HEADER)
        for record in records:
            writer.writerows([csv_cell(cell) for cell in row] for row in csv_rows(record))


def csv_rows(record: dict[str, Any]) -> list[list[Any]]:
    """The CSV rows of one feature (none when it has no explanations)."""
    sae, feat = record["sae"], record["feature"]
    label = record.get("label") or {}
    rows = []
    for expl in record["explanations"]:
        sim = _simulation_score(expl, label.get("simulator"))
        rows.append([f"{sae['name']}:{feat['index']}", sae["name"], feat["index"],
                     feat["density"], feat["max_activation"], expl["explainer"],
                     expl["llm_model"], expl["candidate"], expl["status"],
                     int(expl["is_best"]), expl["text"] or "",
                     _blank(sim and sim["value"]), _blank(sim and sim["floor_value"]),
                     sim["simulator"] if sim else "",
                     *(_blank(sim and sim.get(k)) for k in TRUST_CELLS),
                     _verdict(expl, sim),
                     label.get("selected_on", "") if expl["is_best"] else ""])
    return rows


TRUST_CELLS = ("validation_value", "null_p95", "ci_low", "ci_high")


def _simulation_score(expl: dict[str, Any], simulator: str | None) -> dict[str, Any] | None:
    """The explanation's simulation score under the label's simulator (else its first)."""
    sims = [s for s in expl["scores"] if s["scorer"] == "simulation"]
    return next((s for s in sims if s["simulator"] == simulator), sims[0] if sims else None)


def _verdict(expl: dict[str, Any], sim: dict[str, Any] | None) -> str:
    """A row's verdict: rejected by the gate, the score's verdict, or unscored."""
    if expl["status"] == "rejected":
        return "rejected"
    return (sim or {}).get("verdict") or "unscored"


def _blank(value: Any) -> Any:
    """Missing values as empty cells."""
    return "" if value is None else value
