"""Render an audit's facts (:mod:`autolabel.audit.facts`) into a self-contained HTML report
(+ the same facts as JSON).

The HTML must open offline years later and print to PDF for a compliance file, so everything is
inline: CSS from ``reports/report.css``, charts as SVG built here, no scripts, fonts or URLs.
Jinja2 autoescaping is on for every template: labels, contexts and LLM text are untrusted (a
corpus can contain ``<script>``), and the SVG builders escape their text the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup, escape

from autolabel.errors import AutolabelError
from autolabel.resources import reports_dir

TEMPLATE = "report.html.j2"
STYLESHEET = "report.css"
TIER_NAMES = {1: "Tier 1 label", 2: "Tier 2 activation", 3: "Tier 3 direction"}
SEVERITY_COLOURS = {"critical": "#8b1a1a", "high": "#c2410c", "medium": "#b7791f",
                    "review": "#2b6cb0"}


def environment() -> Environment:
    """A Jinja2 environment over the packaged report templates, autoescape always on."""
    env = Environment(loader=FileSystemLoader(str(reports_dir())), autoescape=True,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt_num
    env.filters["heat"] = heat_colour
    return env


def write_report(facts: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.json`` (the same facts) into ``out_dir``."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AutolabelError(f"cannot create report folder {out_dir} ({exc.strerror}); "
                             "pick a writable --out directory") from None
    html_path, json_path = out_dir / "report.html", out_dir / "report.json"
    json_path.write_text(json.dumps(facts, indent=2, sort_keys=True, allow_nan=False) + "\n",
                         encoding="utf-8")
    html_path.write_text(render_html(facts), encoding="utf-8")
    return html_path, json_path


def render_html(facts: dict[str, Any]) -> str:
    """The report as one HTML string."""
    css = (reports_dir() / STYLESHEET).read_text(encoding="utf-8")
    results = facts["results"]
    charts = {
        "heatmap": heatmap_svg(results["per_category"]),
        "effects": histogram_svg(results["abs_dz_features"], results["abs_dz_random"],
                                 facts["methodology"]["thresholds"]["effect"]),
    }
    return environment().get_template(TEMPLATE).render(
        f=facts, css=Markup(css), charts=charts, tier_names=TIER_NAMES,
        severity_colours=SEVERITY_COLOURS)


def fmt_num(value: Any, digits: int = 3) -> str:
    """Numbers for people: small p/q in scientific notation, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    v = float(value)
    if not math.isfinite(v):
        return "—"
    if v >= 1e6:
        return "∞"
    if v != 0 and abs(v) < 10 ** -(digits - 1):
        return f"{v:.1e}"
    return f"{v:.{digits}g}" if abs(v) >= 1000 else f"{v:.{digits}f}".rstrip("0").rstrip(".")


def heat_colour(value: float, top: float) -> str:
    """Background for a heat-map cell: white to deep red with the count."""
    t = 0.0 if top <= 0 else min(1.0, value / top)
    r, g, b = (255 - int(t * 116), 255 - int(t * 229), 255 - int(t * 229))
    return f"rgb({r},{g},{b})"


def heatmap_svg(per_category: Sequence[dict[str, Any]]) -> Markup:
    """Category x tier counts of flagged features as an inline SVG grid."""
    cell_w, cell_h, left, top = 120, 26, 170, 30
    width, height = left + 3 * cell_w + 10, top + cell_h * max(len(per_category), 1) + 10
    peak = max([max(c["tier1"], c["tier2"], c["tier3"]) for c in per_category] + [1])
    parts = [f'<svg width="{width}" height="{height}" '
             f'role="img" aria-label="Flagged features per category and tier" '
             f'viewBox="0 0 {width} {height}" class="chart">']
    for t in (1, 2, 3):
        x = left + (t - 1) * cell_w + cell_w / 2
        parts.append(f'<text x="{x}" y="18" text-anchor="middle" class="axis">'
                     f'{escape(TIER_NAMES[t])}</text>')
    for i, c in enumerate(per_category):
        y = top + i * cell_h
        parts.append(f'<text x="{left - 8}" y="{y + 17}" text-anchor="end" class="axis">'
                     f'{escape(c["category"])}</text>')
        for t in (1, 2, 3):
            v = int(c[f"tier{t}"])
            x = left + (t - 1) * cell_w
            parts.append(f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" '
                         f'fill="{heat_colour(v, peak)}" stroke="#ccc"/>')
            colour = "#fff" if v / peak > 0.55 else "#222"
            parts.append(f'<text x="{x + cell_w / 2}" y="{y + 17}" text-anchor="middle" '
                         f'fill="{colour}" class="cell">{v}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _bins(values: Sequence[float], edges: Sequence[float]) -> list[float]:
    """Share of values per bin (last bin open-ended)."""
    counts = [0] * (len(edges) - 1)
    for v in values:
        idx = next((i for i in range(len(edges) - 1) if v < edges[i + 1]), len(edges) - 2)
        counts[idx] += 1
    n = max(len(values), 1)
    return [c / n for c in counts]


def histogram_svg(features: Sequence[float], random: Sequence[float],
                  threshold: float) -> Markup:
    """Distribution of max |d_z| across categories: audited features vs random directions."""
    top = max([threshold * 2, *[v for v in features if v < 100], *random, 1.0])
    top = min(top, 20.0)
    n_bins = 24
    edges = [top * i / n_bins for i in range(n_bins)] + [math.inf]
    feat, rand = _bins(features, edges), _bins(random, edges)
    w, h, left, bottom, right = 560, 220, 46, 36, 10
    pw, ph = w - left - right, h - bottom - 20
    peak = max(feat + rand + [0.01])
    bw = pw / n_bins
    parts = [f'<svg width="{w}" height="{h}" role="img" '
             f'aria-label="Effect size distribution" viewBox="0 0 {w} {h}" class="chart">',
             f'<line x1="{left}" y1="{20 + ph}" x2="{left + pw}" y2="{20 + ph}" stroke="#444"/>']
    for i, (a, b) in enumerate(zip(feat, rand, strict=True)):
        x = left + i * bw
        for j, (share, colour) in enumerate(((a, "#1f4e79"), (b, "#b0b0b0"))):
            bh = ph * share / peak
            parts.append(f'<rect x="{x + 1 + j * bw / 2:.1f}" y="{20 + ph - bh:.1f}" '
                         f'width="{bw / 2 - 1:.1f}" height="{bh:.1f}" fill="{colour}"/>')
    tx = left + pw * min(threshold / top, 1.0)
    parts.append(f'<line x1="{tx:.1f}" y1="14" x2="{tx:.1f}" y2="{20 + ph}" stroke="#c2410c" '
                 f'stroke-dasharray="4 3"/><text x="{tx + 4:.1f}" y="14" class="axis">'
                 f'|d_z| = {escape(fmt_num(threshold))}</text>')
    for k in range(5):
        v = top * k / 4
        parts.append(f'<text x="{left + pw * k / 4:.1f}" y="{20 + ph + 14}" text-anchor="middle"'
                     f' class="axis">{escape(fmt_num(v, 2))}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{h - 4}" text-anchor="middle" class="axis">'
                 f'max |d_z| over categories (last bin: ≥ {escape(fmt_num(top, 2))})</text>'
                 f'<text x="12" y="{20 + ph / 2}" transform="rotate(-90 12 {20 + ph / 2})" '
                 f'text-anchor="middle" class="axis">share</text></svg>')
    return Markup("".join(parts))
