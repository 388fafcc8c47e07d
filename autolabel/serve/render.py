"""HTML rendering for ``autolabel serve``: the Jinja environment and what templates are fed.

Every template is autoescaped, and every piece of corpus text or model output additionally goes
through :func:`autolabel.safety.visible` (control and bidi characters made visible), so the
browser only ever sees text. Nothing is marked safe. Highlight intensities are CSS classes, not
inline styles, because the Content-Security-Policy allows no inline style or script; the
histogram is inline SVG built from numbers only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from autolabel.examples import Example
from autolabel.resources import web_dir
from autolabel.safety import visible

LEVELS = 10  # highlight classes a0 (none) … a9 (the window's scale)
SVG_W, SVG_H = 480, 120


def environment() -> Environment:
    """The template environment (autoescape on for every template, unknown names an error)."""
    env = Environment(loader=FileSystemLoader(str(web_dir() / "templates")), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["score"] = score_text
    env.filters["num"] = number
    env.filters["pct"] = percent
    env.filters["visible"] = lambda text: visible(str(text)) if text is not None else ""
    return env


def score_text(value: float | None, floor: float | None = None) -> str:
    """``0.412 (floor 0.051)``: a score is never shown without its floor."""
    if value is None or not math.isfinite(value):
        return "—"
    if floor is None or not math.isfinite(floor):
        return f"{value:.3f} (floor —)"
    return f"{value:.3f} (floor {floor:.3f})"


def number(value: float | None, digits: int = 3) -> str:
    """A finite number with ``digits`` significant digits, or a dash."""
    if value is None or not math.isfinite(float(value)):
        return "—"
    return f"{float(value):.{digits}g}"


def percent(value: float | None) -> str:
    """A share as a percentage (three significant digits)."""
    if value is None or not math.isfinite(float(value)):
        return "—"
    return f"{100 * float(value):.3g}%"


@dataclass(frozen=True)
class Token:
    """One token of a context window: its text, activation and highlight class."""

    text: str
    act: float
    level: int


@dataclass(frozen=True)
class Context:
    """A context window as shown: tokens, where it comes from, its strongest activation."""

    tokens: list[Token]
    split: str
    kind: str
    bin: int | None
    document_id: str
    max_activation: float


def context(example: Example, decode: Any, scale: float) -> Context:
    """An example with decoded, highlighted tokens (level = activation / ``scale``)."""
    strings = decode(example.token_ids.tolist())
    tokens = []
    for text, act in zip(strings, example.activations.tolist(), strict=False):
        level = 0 if scale <= 0 or act <= 0 else max(1, min(LEVELS - 1,
                                                         math.ceil(act / scale * (LEVELS - 1))))
        tokens.append(Token(text=visible(text), act=float(act), level=level))
    return Context(tokens=tokens, split=example.split, kind=example.kind, bin=example.bin,
                   document_id=visible(example.document_id),
                   max_activation=float(example.max_activation))


SECTIONS = (
    ("top", "Top activations (train)", lambda e: e.split == "train" and e.kind == "top"),
    ("quantile", "Quantile samples (train)", lambda e: e.split == "train" and e.kind == "quantile"),
    ("validation", "Validation contexts (choose among labels)", lambda e: e.split == "validation"),
    ("test", "Test contexts (held out: the reported score)", lambda e: e.split == "test"),
    ("random", "Random contexts (train)", lambda e: e.split == "train" and e.kind == "random"),
)


def sections(examples: Sequence[Example], decode: Any, scale: float,
             per_section: int = 12) -> list[tuple[str, str, list[Context]]]:
    """Examples grouped for the feature page (top, quantiles by bin, held-out splits)."""
    out = []
    for key, title, keep in SECTIONS:
        chosen = [e for e in examples if keep(e)]
        chosen.sort(key=lambda e: (-(e.bin or 0), -e.max_activation, e.rank))
        if chosen:
            out.append((key, title, [context(e, decode, scale) for e in chosen[:per_section]]))
    return out


@dataclass(frozen=True)
class Bar:
    """One histogram bar in SVG user units, with its tooltip text."""

    x: float
    y: float
    width: float
    height: float
    title: str


def histogram_bars(counts: Sequence[float], edges: Sequence[float] | None = None,
                   width: int = SVG_W, height: int = SVG_H) -> list[Bar]:
    """Bars for an inline SVG (log-scaled heights: counts span orders of magnitude)."""
    if not counts:
        return []
    top = math.log1p(max(counts)) or 1.0
    step = width / len(counts)
    bars = []
    for i, c in enumerate(counts):
        h = height * math.log1p(max(0.0, float(c))) / top
        lo = f"{edges[i]:.3g}" if edges and i < len(edges) else ""
        hi = f"{edges[i + 1]:.3g}" if edges and i + 1 < len(edges) else ""
        bars.append(Bar(x=round(i * step, 2), y=round(height - h, 2),
                        width=round(max(step - 1, 1), 2), height=round(h, 2),
                        title=f"{lo}–{hi}: {int(c)}" if lo else str(int(c))))
    return bars


def value_histogram(values: Sequence[float], lo: float = -1.0, hi: float = 1.0,
                    bins: int = 20) -> tuple[list[Bar], list[float]]:
    """Bars of a distribution of scores (linear heights), and the bin edges."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    edges = np.linspace(lo, hi, bins + 1)
    counts, _ = np.histogram(np.clip(finite, lo, hi), bins=edges) if finite else (
        np.zeros(bins), edges)
    top = max(int(counts.max()), 1) if len(counts) else 1
    step = SVG_W / bins
    bars = [Bar(x=round(i * step, 2), y=round(SVG_H - SVG_H * c / top, 2),
                width=round(step - 1, 2), height=round(SVG_H * c / top, 2),
                title=f"{edges[i]:.2f}–{edges[i + 1]:.2f}: {int(c)}")
            for i, c in enumerate(counts.tolist())]
    return bars, [float(e) for e in edges]
