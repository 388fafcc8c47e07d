"""Console renderings (rich): feature cards, highlighted contexts, sparklines, tables.

Kept apart from the CLI so commands stay thin and so the same renderings serve every command
that shows features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from rich.console import Console, Group
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from autolabel.db import Feature, SAERecord
from autolabel.examples import Example
from autolabel.runs import stage_headline
from autolabel.safety import visible
from autolabel.store import FeaturePayload

BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(counts: Sequence[float]) -> str:
    """Unicode sparkline of a histogram (empty bins show as the lowest block)."""
    if not counts:
        return ""
    top = max(counts) or 1
    return "".join(BLOCKS[min(len(BLOCKS) - 1, int(c / top * (len(BLOCKS) - 1) + 0.5))]
                   for c in counts)


def token_text(token: str) -> str:
    """Make a decoded token printable: newlines, tabs and every other control character
    (terminal escape sequences included) become visible escapes."""
    return visible(token)


def plain(text: str | None) -> Text:
    """Untrusted text (corpus, model output, names) as a rich Text: never parsed as markup,
    control characters made visible."""
    return Text(visible(text or ""))


def highlight(tokens: Sequence[str], acts: np.ndarray, scale: float) -> Text:
    """Tokens with a green background whose intensity follows activation / ``scale``."""
    text = Text()
    for tok, act in zip(tokens, acts, strict=False):
        level = 0.0 if scale <= 0 else float(min(1.0, max(0.0, act / scale)))
        if level <= 0:
            text.append(token_text(tok))
            continue
        shade = int(40 + 180 * level)
        style = f"bold black on rgb({255 - shade},{255},{255 - shade})"
        text.append(token_text(tok), style=style)
    return text


def feature_stats_table(sae: SAERecord, feature: Feature) -> Table:
    """Key statistics of one feature, with its activation histogram as a sparkline."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    hist = (feature.histogram or {}).get("counts", [])
    edges = (feature.histogram or {}).get("edges", [])
    span = f" ({edges[0]:.3g} … {edges[-1]:.3g}, log bins)" if edges else ""
    rows: list[tuple[str, str | Text]] = [
        ("SAE", plain(f"{sae.name}  [{sae.hook_name}, d_sae={sae.d_sae}]")),
        ("density", f"{feature.density:.4%} of {feature.n_tokens:,} tokens"),
        ("max / mean (firing)",
         f"{feature.max_activation:.3g} / {feature.mean_firing_activation:.3g}"),
        ("histogram", sparkline(hist) + span),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def examples_panel(title: str, examples: Sequence[Example], scale: float,
                   decode: Callable[[Sequence[int]], list[str]], limit: int) -> Panel:
    """A panel of highlighted contexts, strongest first."""
    lines: list[Any] = []
    for ex in sorted(examples, key=lambda e: -e.max_activation)[:limit]:
        label = Text(f"{ex.max_activation:8.3g}  ", style="dim")
        lines.append(label + highlight(decode(ex.token_ids.tolist()), ex.activations, scale))
    body: Any = Group(*lines) if lines else Text("(none)", style="dim")
    return Panel(body, title=title, title_align="left")


def print_feature(console: Console, sae: SAERecord, feature: Feature,
                  examples: Sequence[Example],
                  decode: Callable[[Sequence[int]], list[str]], limit: int = 8) -> None:
    """Print a feature card: statistics then top, quantile and random contexts."""
    console.rule(Text(visible(f"{sae.name}:{feature.index}"), style="bold"))
    console.print(feature_stats_table(sae, feature))
    scale = feature.max_activation
    for split in ("train", "test"):
        for kind in ("top", "quantile", "random"):
            chosen = [e for e in examples if e.split == split and e.kind == kind]
            if chosen:
                title = f"{split} · {kind} ({len(chosen)})"
                console.print(examples_panel(title, chosen, scale, decode, limit))


def trimmed_sparkline(counts: Sequence[float]) -> str:
    """Sparkline of the occupied span of a histogram (empty end bins dropped, so the fixed
    32-bin log histogram fits a narrow terminal)."""
    nonzero = [i for i, c in enumerate(counts) if c]
    if not nonzero:
        return ""
    return sparkline(counts[nonzero[0]:nonzero[-1] + 1])


def features_table(sae: SAERecord, features: Sequence[Feature], total: int) -> Table:
    """One row per feature: index, density, max activation, histogram (fits 80 columns)."""
    name = visible(sae.name)
    table = Table(title=Text(f"{name}: {len(features)} of {total} collected features "
                             f"(details: autolabel features show {name}:INDEX)"),
                  title_justify="left")
    table.add_column("index", justify="right", no_wrap=True)
    table.add_column("density", justify="right", no_wrap=True)
    table.add_column("max", justify="right", no_wrap=True)
    table.add_column("histogram (log bins)", overflow="fold")
    for f in features:
        counts = (f.histogram or {}).get("counts", [])
        table.add_row(str(f.index), f"{f.density:.3%}", f"{f.max_activation:.3g}",
                      trimmed_sparkline(counts))
    return table


class RateColumn(ProgressColumn):
    """Items per second (blank until rich has measured a speed)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text("" if speed is None else f"{speed:,.0f} {self.unit}/s", style="cyan")


@contextmanager
def progress_bar(description: str, unit: str = "tok", enabled: bool = True
                 ) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar with rate and ETA; yields an ``update(done, total)`` callback.

    Drawn on stderr so ``--json`` output on stdout stays clean; disabled when not a terminal.
    """
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda done, total: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               RateColumn(unit),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def print_feature_payload(console: Console, payload: FeaturePayload, limit: int = 8) -> None:
    """Print a feature card from a loaded payload, explanations (with scores) first."""
    print_feature(console, payload.sae, payload.feature, payload.examples, payload.decode, limit)
    if payload.explanations:
        console.print(explanations_table(payload.explanations))


def score_text(value: float | None, floor: float | None) -> str:
    """``0.41 (0.05)``: a score is never shown without its floor."""
    if value is None:
        return "—"
    return f"{value:.3f} ({'—' if floor is None else f'{floor:.3f}'})"


def explanations_table(explanations: Sequence[dict[str, Any]]) -> Table:
    """A feature's explanation candidates with status, provenance and scores (floors)."""
    table = Table(title="explanations", title_justify="left", show_lines=False)
    for col in ("", "explainer", "status", "explanation", "scores: value (floor)", "provenance"):
        table.add_column(col)
    for e in explanations:
        scores = "\n".join(f"{s['scorer']}[{s['simulator'] or '-'}] "
                           f"{score_text(s['value'], s['floor'])}" for s in e["scores"])
        text = plain(e["text"]) if e["status"] == "ok" else plain(e["error"])
        if e["status"] != "ok":
            text.stylize("dim")
        table.add_row("★" if e["is_best"] else "", e["explainer"], e["status"], text,
                      plain(scores or "—"),
                      plain(f"{e['llm_model'] or '-'} · prompt {e['prompt_hash']} · "
                            f"#{e['candidate']}"))
    return table


def search_table(query: str, hits: Sequence[Any]) -> Table:
    """Search results: feature, explanation, best score (floor), density."""
    table = Table(title=plain(f"search: {query!r} ({len(hits)} results)"),
                  title_justify="left")
    for col in ("#", "feature", "explanation", "score (floor)", "density"):
        table.add_column(col, overflow="fold")
    for hit in hits:
        table.add_row(str(hit.rank), plain(hit.feature), plain(hit.explanation),
                      score_text(hit.score, hit.floor), f"{hit.density:.3%}")
    return table


def stats_table(rows: Sequence[dict[str, Any]]) -> Table:
    """Score distributions per SAE/explainer/scorer with floors (fits 80 columns: no cell is
    cut; long names fold onto a second line)."""
    saes = sorted({r["sae"] for r in rows})
    one = len(saes) == 1
    table = Table(title=plain(f"score distributions{' of ' + saes[0] if one else ''} "
                              "(floor = same scorer on a wrong explanation)"),
                  title_justify="left")
    heads = ([] if one else ["sae"]) + ["explainer", "scorer", "n", "mean (floor)", "median",
                                        "p25–p75", ">floor"]
    for head in heads:
        numeric = head in {"n", "median", ">floor"}
        table.add_column(head, justify="right" if numeric else "left", overflow="fold",
                         no_wrap=head in {"mean (floor)", "p25–p75"})
    for r in rows:
        spread = "—" if r["p25"] is None else f"{r['p25']:.2f}–{r['p75']:.2f}"
        beats = "—" if r["above_floor"] is None else f"{r['above_floor']:.0%}"
        median = "—" if r["median"] is None else f"{r['median']:.3f}"
        scorer = r["scorer"] + (f" [{r['simulator']}]" if r["simulator"] else "")
        cells = [plain(r["sae"])] if not one else []
        table.add_row(*cells, plain(r["explainer"]), plain(scorer), str(r["n"]),
                      score_text(r["mean"], r["floor_mean"]), median, spread, beats)
    return table


@contextmanager
def stage_progress(enabled: bool = True) -> Iterator[Callable[[str], Callable[[int, int], None]]]:
    """One rich progress display for a whole run; yields ``factory(stage) -> update``."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda stage: (lambda done, total: None)
        return
    columns = (TextColumn("[bold]{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
               RateColumn("/s"))
    with Progress(*columns, console=console) as bar:
        def factory(stage: str) -> Callable[[int, int], None]:
            task = bar.add_task(stage, total=None)
            return lambda done, total: bar.update(task, completed=done, total=total)

        yield factory


def run_table(summary: Any) -> Table:
    """The run summary: one row per stage with status, time and the headline numbers."""
    table = Table(title=f"autolabel run {summary.run_id}: {summary.status} "
                  f"in {summary.seconds:.0f}s", title_justify="left")
    for col in ("stage", "status", "seconds", "result"):
        table.add_column(col)
    for stage in summary.stages:
        table.add_row(stage.stage, stage.status, f"{stage.seconds:.1f}",
                      plain(stage_headline(stage.stage, stage.summary)))
    return table
