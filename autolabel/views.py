"""Console renderings (rich): feature cards, highlighted contexts, sparklines, tables.

Kept apart from the CLI so commands stay thin and so the same renderings serve every command
that shows features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
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
from autolabel.store.labels import Label

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
    for split in ("train", "validation", "test"):
        for kind in ("top", "quantile", "random"):
            chosen = [e for e in examples if e.split == split and e.kind == kind]
            if chosen:
                title = f"{split} · {kind} ({len(chosen)})"
                console.print(examples_panel(title, chosen, scale, decode, limit))


LEGACY_MARK = "*"  # a label chosen on the test split (collection without a validation split)
LEGACY_NOTE = (f"{LEGACY_MARK} chosen on the test split (collected before the validation "
               "split): re-collect to choose on validation")
VERDICT_STYLE = {"trusted": "green", "weak": "yellow", "at_floor": "red", "rejected": "dim",
                 "unscored": "dim"}


def verdict_text(label: Label) -> Text:
    """The verdict, coloured, with the legacy mark when the label was chosen on test."""
    mark = LEGACY_MARK if label.selected_on == "test" else ""
    return Text(label.verdict + mark, style=VERDICT_STYLE.get(label.verdict, ""))


def label_text(label: Label) -> Text:
    """The label's text, or why there is none (never a rejected candidate's text)."""
    if label.text is not None:
        return plain(label.text)
    why = ("all candidates rejected by the quality gate" if label.verdict == "rejected"
           else "no explanation yet")
    return Text(f"({why})", style="dim")


def features_table(sae: SAERecord, features: Sequence[Feature], total: int,
                   labels: Mapping[int, Label] | None = None) -> Table:
    """One row per feature: index, label, score (floor), verdict, density (fits 80 columns:
    the label folds onto more lines, nothing is cut)."""
    name = visible(sae.name)
    table = Table(title=Text(f"{name}: {len(features)} of {total} collected features "
                             f"(details: autolabel features show {name}:INDEX)"),
                  title_justify="left")
    table.add_column("index", justify="right", no_wrap=True)
    table.add_column("label", overflow="fold", ratio=1)
    table.add_column("score (floor)", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("density", justify="right", no_wrap=True)
    legacy = False
    for f in features:
        label = (labels or {}).get(f.id)
        if label is None:
            table.add_row(str(f.index), Text("—", style="dim"), "—", "", f"{f.density:.3%}")
            continue
        legacy = legacy or label.selected_on == "test"
        table.add_row(str(f.index), label_text(label), score_text(label.score, label.floor),
                      verdict_text(label), f"{f.density:.3%}")
    if legacy:
        table.caption, table.caption_justify = LEGACY_NOTE, "left"
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
    """Print a feature card from a loaded payload: statistics, contexts, the label with its
    verdict and evidence, then every candidate with its scores."""
    print_feature(console, payload.sae, payload.feature, payload.examples, payload.decode, limit)
    if payload.label is not None:
        console.print(label_panel(payload.label))
    if payload.explanations:
        console.print(explanations_table(payload.explanations))


def label_panel(label: Label) -> Panel:
    """The feature's label: text, verdict, and the numbers the verdict comes from."""
    body = Table.grid(padding=(0, 2))
    body.add_column(style="bold", no_wrap=True)
    body.add_column(overflow="fold")
    body.add_row("label", label_text(label))
    body.add_row("verdict", verdict_text(label))
    if label.score is not None:
        ci = ("—" if label.ci_low is None or label.ci_high is None
              else f"{label.ci_low:.3f} to {label.ci_high:.3f}")
        null = "—" if label.null_p95 is None else f"{label.null_p95:.3f}"
        body.add_row("test score (floor)", score_text(label.score, label.floor))
        body.add_row("95% CI, null p95", f"{ci}, {null}")
    if label.selected_on == "validation":
        body.add_row("chosen on", "the validation split (reported on test)")
    elif label.selected_on == "test":
        body.add_row("chosen on", "the TEST split: collected before the validation split; "
                     "re-collect to choose on validation")
    if label.explainer:
        body.add_row("from", plain(f"{label.explainer} · {label.llm_model or '-'} · "
                                   f"{label.scorer}[{label.simulator or '-'}]"))
    return Panel(body, title="label", title_align="left")


def score_text(value: float | None, floor: float | None) -> str:
    """``0.41 (0.05)``: a score is never shown without its floor."""
    if value is None:
        return "—"
    return f"{value:.3f} ({'—' if floor is None else f'{floor:.3f}'})"


def explanations_table(explanations: Sequence[dict[str, Any]]) -> Table:
    """A feature's explanation candidates with status, provenance and scores (test value,
    floor, verdict, validation value); every cell folds at 80 columns, none is cut."""
    table = Table(title="explanations", title_justify="left", show_lines=False)
    for col in ("", "explainer", "status", "explanation", "scores: test (floor)", "provenance"):
        table.add_column(col, overflow="fold")
    for e in explanations:
        scores = "\n".join(_score_line(sc) for sc in e["scores"])
        text = plain(e["text"]) if e["status"] == "ok" else plain(e["error"])
        if e["status"] != "ok":
            text.stylize("dim")
        table.add_row("★" if e["is_best"] else "", e["explainer"], e["status"], text,
                      plain(scores or "—"),
                      plain(f"{e['llm_model'] or '-'} · prompt {e['prompt_hash']} · "
                            f"#{e['candidate']}"))
    return table


def _score_line(score: dict[str, Any]) -> str:
    """``simulation[sim] 0.41 (0.05) trusted · val 0.39``: a candidate's score as listed."""
    simulator = (score["simulator"] or "-").split(":")[0]  # the kind; the model is in stats
    line = f"{score['scorer']}[{simulator}] {score_text(score['value'], score['floor'])}"
    if score.get("verdict"):
        line += f" {score['verdict']}"
    if score.get("validation") is not None:
        line += f" · val {score['validation']:.3f}"
    if score.get("status") not in (None, "ok"):
        line += f" [{score['status']}]"
    return line


def search_table(query: str, hits: Sequence[Any]) -> Table:
    """Search results: feature, explanation, its label's verdict and score (floor), density."""
    table = Table(title=plain(f"search: {query!r} ({len(hits)} results)"),
                  title_justify="left")
    for col in ("#", "feature", "explanation", "verdict", "score (floor)", "density"):
        table.add_column(col, overflow="fold")
    for hit in hits:
        table.add_row(str(hit.rank), plain(hit.feature), plain(hit.explanation),
                      plain(getattr(hit, "verdict", "")), score_text(hit.score, hit.floor),
                      f"{hit.density:.3%}")
    return table


def stats_table(rows: Sequence[dict[str, Any]]) -> Table:
    """Score distributions per SAE/explainer/scorer with floors, and how many are trusted:
    ``trusted`` over every scored candidate, ``labels`` over the features whose label came from
    this row (trusted / labels). One simulator goes in the title; fits 80 columns (long names
    fold, no cell is cut; quartiles are in ``--json``)."""
    saes = sorted({r["sae"] for r in rows})
    sims = sorted({r["simulator"] for r in rows if r["simulator"]})
    one = len(saes) == 1
    where = (f" of {saes[0]}" if one else "") + (f" [{sims[0]}]" if len(sims) == 1 else "")
    table = Table(title=plain(f"score distributions{where} (floor = same scorer on a wrong "
                              "explanation)"), title_justify="left",
                  caption="trusted: share of scored candidates; labels: trusted / features "
                  "whose label comes from this row", caption_justify="left")
    heads = ([] if one else ["sae"]) + ["explainer", "scorer", "n", "mean (floor)", ">floor",
                                        "trusted", "labels"]
    for head in heads:
        numeric = head in {"n", ">floor", "trusted", "labels"}
        table.add_column(head, justify="right" if numeric else "left", overflow="fold",
                         no_wrap=head in {"mean (floor)", "labels", "trusted", ">floor"})
    for r in rows:
        beats = "—" if r["above_floor"] is None else f"{r['above_floor']:.0%}"
        trusted = "—" if r.get("trusted") is None else f"{r['trusted']:.0%}"
        labels = f"{r.get('labels_trusted', 0)}/{r.get('labels', 0)}"
        shown_sim = r["simulator"] if len(sims) > 1 and r["simulator"] else ""
        scorer = r["scorer"] + (f" [{shown_sim}]" if shown_sim else "")
        cells = [plain(r["sae"])] if not one else []
        table.add_row(*cells, plain(r["explainer"]), plain(scorer), str(r["n"]),
                      score_text(r["mean"], r["floor_mean"]), beats, trusted, labels)
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
