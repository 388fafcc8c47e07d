"""The ``autolabel`` command line.

Thin by design: each command parses options, calls one library function and prints. Library
code raises :class:`AutolabelError`; the group below turns it into one ``Error: …`` line and a
non-zero exit (``AUTOLABEL_DEBUG=1`` shows the traceback instead).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from autolabel import __version__
from autolabel.errors import AutolabelError

DEBUG_ENV = "AUTOLABEL_DEBUG"


class AutolabelGroup(click.Group):
    """A click group that reports library errors as one clean line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AutolabelError as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted; work done so far is saved, re-run to resume.", err=True)
            ctx.exit(130)
        except Exception as exc:  # an autolabel bug: still one line unless debugging
            if os.environ.get(DEBUG_ENV) or ctx.find_root().params.get("verbose"):
                raise
            click.echo(
                f"Error: unexpected {type(exc).__name__}: {exc} "
                f"(re-run with {DEBUG_ENV}=1 for the traceback and report it)",
                err=True,
            )
            ctx.exit(1)


@dataclass
class App:
    """Per-invocation state shared by commands: global options, lazily loaded config and DB."""

    config_path: Path | None
    db_flag: str | None
    json_output: bool
    verbose: int
    overrides: dict[str, Any] = field(default_factory=dict)

    def config(self) -> Any:
        """The effective config (file < env < flags)."""
        from autolabel.config import load_config

        flags = {"db": self.db_flag, **self.overrides}
        return load_config(self.config_path, flags)

    def database(self, migrate: bool = True) -> Any:
        """Open the configured database (migrated to head unless ``migrate=False``)."""
        from autolabel.db import open_database

        return open_database(self.config().db, migrate=migrate)

    def emit(self, data: Any, human: str) -> None:
        """Print ``data`` as JSON under ``--json``, else the human-readable text."""
        if self.json_output:
            click.echo(json.dumps(data, indent=2, default=str))
        else:
            click.echo(human)


pass_app = click.make_pass_decorator(App)


@click.group(cls=AutolabelGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="autolabel")
@click.option(
    "--db",
    "db",
    envvar="AUTOLABEL_DB",
    metavar="URL",
    help="Database URL or SQLite file (env AUTOLABEL_DB; default: a SQLite file in the user "
    "data dir). Example: --db labels.db or --db postgresql://me@host/autolabel",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="AUTOLABEL_CONFIG",
    metavar="FILE",
    help="TOML config file (env AUTOLABEL_CONFIG). Example: --config nightly.toml",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug). Example: -v")
@click.option(
    "--json", "json_output", is_flag=True, help="Machine-readable JSON output. Example: --json"
)
@click.pass_context
def cli(
    ctx: click.Context, db: str | None, config_path: Path | None, verbose: int, json_output: bool
) -> None:
    """autolabel: label, score, search and audit sparse-autoencoder features.

    \b
    Example:
      autolabel db upgrade
      autolabel --db labels.db config show
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = App(config_path=config_path, db_flag=db, json_output=json_output, verbose=verbose)


# ---------------------------------------------------------------------------------------------
# db


@cli.group(cls=AutolabelGroup)
def db() -> None:
    """Create, migrate and check the database.

    \b
    Example:
      autolabel db upgrade
      autolabel --db postgresql://me@host/autolabel db check
    """


@db.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Create the database if needed and migrate it to the newest schema.

    \b
    Example:
      autolabel --db labels.db db upgrade
    """
    from autolabel.db import current_revision, redact

    database = app.database(migrate=True)
    rev = current_revision(database.engine)
    app.emit(
        {"url": redact(database.url), "revision": rev},
        f"Database {redact(database.url)} is at revision {rev} (head).",
    )


@db.command("current")
@pass_app
def db_current(app: App) -> None:
    """Show the database's schema revision and the newest one this version ships.

    \b
    Example:
      autolabel db current
    """
    from autolabel.db import current_revision, head_revision, redact

    database = app.database(migrate=False)
    rev, head = current_revision(database.engine), head_revision()
    app.emit(
        {"url": redact(database.url), "revision": rev, "head": head},
        f"{redact(database.url)}: revision {rev or '(empty)'}; newest available {head}.",
    )


@db.command("check")
@pass_app
def db_check(app: App) -> None:
    """Exit 0 when the database is at the newest revision and matches the models.

    \b
    Example:
      autolabel db check && echo ready
    """
    from autolabel.db import check_database

    database = app.database(migrate=False)
    report = check_database(database)
    app.emit(report, f"OK: {report['url']} is at revision {report['revision']} with no drift.")


# ---------------------------------------------------------------------------------------------
# config


@cli.group("config", cls=AutolabelGroup)
def config_group() -> None:
    """Inspect the effective configuration.

    \b
    Example:
      autolabel --config nightly.toml config show
    """


@config_group.command("show")
@pass_app
def config_show(app: App) -> None:
    """Print the effective config (defaults < file < AUTOLABEL_* env < flags) as TOML.

    \b
    Example:
      AUTOLABEL_SUBJECT__LAYER=9 autolabel config show
    """
    from autolabel.config import config_as_toml

    config = app.config()
    if app.json_output:
        click.echo(json.dumps(config.model_dump(mode="json"), indent=2))
    else:
        click.echo(config_as_toml(config), nl=False)


class TokenCount(click.ParamType):
    """Integers with k/M suffixes: ``500k`` → 500000."""

    name = "count"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower().replace("_", "").replace(",", "")
        scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
        try:
            number = float(text[:-1] if scale > 1 else text)
        except ValueError:
            self.fail(f"{value!r} is not a count; use e.g. 200000, 500k or 2M", param, ctx)
        if number <= 0:
            self.fail(f"{value!r} must be positive", param, ctx)
        return int(number * scale)


def model_options(func: Any) -> Any:
    """Options shared by commands that run the subject model and SAE."""
    options = [
        click.option("--model", help="Subject model: HF id, local dir, .gguf file, or the "
                     "offline default. Example: --model gemma-3-270m"),
        click.option("--layer", type=int, help="Layer whose residual output is hooked. "
                     "Example: --layer 6"),
        click.option("--sae", help="SAE: 'default' (trained once, cached), a local sae-lens dir, "
                     "or RELEASE:SAE_ID. Example: --sae gemma-scope-2-270m-pt-res:"
                     "layer_9_width_16k_l0_medium"),
        click.option("--corpus", help="Text source: wikipedia-sample, python-docs, a .txt/.jsonl/"
                     ".csv/.parquet file or glob, or hf:NAME[:CONFIG][:SPLIT]. "
                     "Example: --corpus python-docs"),
        click.option("--text-field", help="Text column of jsonl/csv/parquet/hf sources. "
                     "Example: --text-field body"),
        click.option("--device", help="torch device (default: CUDA if present). "
                     "Example: --device cpu"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def model_overrides(model: str | None, layer: int | None, sae: str | None, corpus: str | None,
                    text_field: str | None, device: str | None) -> dict[str, Any]:
    """Map the shared model options onto dotted config keys."""
    return {"subject.model": model, "subject.layer": layer, "sae.sae": sae,
            "corpus.source": corpus, "corpus.text_field": text_field, "subject.device": device}


# ---------------------------------------------------------------------------------------------
# collect


@cli.command("collect")
@model_options
@click.option("--features", help="Feature indices: 0:512, 1,5,9 or all (default from config: "
              "0:64). Example: --features 0:512")
@click.option("--tokens", type=TokenCount(), help="Corpus tokens to stream (k/M suffixes). "
              "Example: --tokens 500k")
@click.option("--window", type=int, help="Tokens per context window, BOS included. "
              "Example: --window 64")
@click.option("--batch-size", type=int, help="Windows per forward pass. Example: --batch-size 8")
@click.option("--seed", type=int, help="Seed for the train/test document split and sampling. "
              "Example: --seed 0")
@click.option("--force", is_flag=True, help="Re-collect even if this exact collection exists. "
              "Example: --force")
@pass_app
def collect_cmd(app: App, model: str | None, layer: int | None, sae: str | None,
                corpus: str | None, text_field: str | None, device: str | None,
                features: str | None, tokens: int | None, window: int | None,
                batch_size: int | None, seed: int | None, force: bool) -> None:
    """Collect top, quantile and random contexts and statistics for SAE features.

    Runs the model to the hooked layer over the corpus, encodes with the SAE, and keeps per
    feature its top-activating windows (train and test documents separately), quantile samples,
    inactive random windows and activation statistics. Re-running the same collection is a
    no-op; new features are added incrementally.

    \b
    Example:
      autolabel collect --features 0:512 --tokens 500k
      autolabel collect --model gemma-3-270m --layer 6 --sae default --corpus python-docs
    """
    from autolabel.pipeline import collect_stage
    from autolabel.views import progress_bar

    app.overrides.update(model_overrides(model, layer, sae, corpus, text_field, device))
    app.overrides.update({"collect.features": features, "collect.tokens": tokens,
                          "corpus.window": window, "collect.batch_size": batch_size,
                          "corpus.seed": seed})
    config, database = app.config(), app.database()
    with progress_bar("training default SAE", "tok") as sae_bar, \
            progress_bar("collecting", "tok") as bar:
        summary = collect_stage(config, database, force=force, progress=bar,
                                sae_progress=sae_bar)
    done = summary.features - summary.already_done
    app.emit(summary.__dict__ | {"tokens_per_second": summary.tokens_per_second},
             f"Collected {done} features of SAE {summary.sae!r} over {summary.tokens:,} tokens "
             f"({summary.tokens_per_second:,.0f} tok/s); {summary.already_done} were already done."
             f"\nNext: autolabel features list --sae {summary.sae}")


# ---------------------------------------------------------------------------------------------
# sae


@cli.group("sae", cls=AutolabelGroup)
def sae_group() -> None:
    """Train and inspect sparse autoencoders.

    \b
    Example:
      autolabel sae train --layer 6 --d-sae 4096 --tokens 200k
    """


@sae_group.command("train")
@model_options
@click.option("--d-sae", type=int, help="Number of latents. Example: --d-sae 4096")
@click.option("--k", "k", type=int, help="Active latents per token. Example: --k 32")
@click.option("--architecture", type=click.Choice(["batchtopk", "topk"]),
              help="SAE architecture. Example: --architecture batchtopk")
@click.option("--tokens", type=TokenCount(), help="Training tokens (100k more are held out for "
              "the report). Example: --tokens 200k")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Save here instead of the cache (sae-lens format). Example: --out my-sae")
@pass_app
def sae_train(app: App, model: str | None, layer: int | None, sae: str | None,
              corpus: str | None, text_field: str | None, device: str | None,
              d_sae: int | None, k: int | None, architecture: str | None, tokens: int | None,
              out: Path | None) -> None:
    """Train a small TopK/BatchTopK SAE with sae-lens and record it in the database.

    Reports explained variance, L0 and the dead-latent fraction on held-out tokens. Without
    --out it becomes the cached offline default SAE for this model and layer.

    \b
    Example:
      autolabel sae train --layer 6 --d-sae 4096 --k 32 --tokens 200k
    """
    from autolabel.pipeline import sae_train_stage
    from autolabel.views import progress_bar

    app.overrides.update(model_overrides(model, layer, sae, corpus, text_field, device))
    app.overrides.update({"sae.d_sae": d_sae, "sae.k": k, "sae.architecture": architecture,
                          "sae.train_tokens": tokens})
    config, database = app.config(), app.database()
    with progress_bar("training SAE", "tok") as bar:
        report, name = sae_train_stage(config, database, out, bar)
    app.emit({"name": name, **report.__dict__, "path": str(report.path)},
             f"Trained SAE {name!r} in {report.seconds:.0f}s → {report.path}\n"
             f"held-out explained variance {report.explained_variance:.3f}, "
             f"L0 {report.l0:.1f}, dead latents {report.dead_fraction:.1%}")


# ---------------------------------------------------------------------------------------------
# features


@cli.group("features", cls=AutolabelGroup)
def features_group() -> None:
    """List and inspect collected features.

    \b
    Example:
      autolabel features list
      autolabel features show default:12
    """


@features_group.command("list")
@click.option("--sae", help="SAE name (default: the newest). Example: --sae default")
@click.option("--limit", type=int, default=50, show_default=True,
              help="Rows to show. Example: --limit 20")
@click.option("--offset", type=int, default=0, help="Rows to skip. Example: --offset 100")
@pass_app
def features_list(app: App, sae: str | None, limit: int, offset: int) -> None:
    """List collected features with density, max activation and a histogram sparkline.

    \b
    Example:
      autolabel features list --sae default --limit 20
      autolabel --json features list
    """
    from autolabel.store import list_features
    from autolabel.views import features_table

    database = app.database()
    with database.session() as session:
        record, rows, total = list_features(session, sae, limit, offset)
        data = [{"feature": f"{record.name}:{f.index}", "index": f.index,
                 "density": f.density, "max_activation": f.max_activation,
                 "mean_firing_activation": f.mean_firing_activation} for f in rows]
        table = features_table(record, rows, total)
    if app.json_output:
        app.emit({"sae": record.name, "total": total, "features": data}, "")
    else:
        from rich.console import Console

        Console().print(table)


@features_group.command("show")
@click.argument("feature")
@click.option("--limit", type=int, default=8, show_default=True,
              help="Contexts per group. Example: --limit 5")
@pass_app
def features_show(app: App, feature: str, limit: int) -> None:
    """Show a feature: statistics, histogram and highlighted contexts.

    FEATURE is SAE:INDEX (e.g. default:12) or just INDEX for the newest SAE.

    \b
    Example:
      autolabel features show default:12
    """
    from autolabel.store import feature_payload
    from autolabel.views import print_feature_payload

    database = app.database()
    payload = feature_payload(database, feature)
    if app.json_output:
        app.emit(payload.as_json(), "")
    else:
        from rich.console import Console

        print_feature_payload(Console(), payload, limit)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="autolabel")


if __name__ == "__main__":  # pragma: no cover
    main()
