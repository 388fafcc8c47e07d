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


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="autolabel")


if __name__ == "__main__":  # pragma: no cover
    main()
