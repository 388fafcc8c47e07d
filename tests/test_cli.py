"""CLI: every command documented (help + example), global options, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from autolabel import __version__
from autolabel.cli import cli
from autolabel.db import head_revision


def walk(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    for name, cmd in sorted(group.commands.items()):
        path = (*prefix, name)
        yield " ".join(path), cmd
        if isinstance(cmd, click.Group):
            yield from walk(cmd, path)


COMMANDS = [("", cli), *walk(cli)]


@pytest.mark.parametrize(("name", "cmd"), COMMANDS, ids=[n or "autolabel" for n, _ in COMMANDS])
def test_every_command_has_help_and_example(name: str, cmd: click.Command) -> None:
    assert cmd.help and len(cmd.help.strip()) > 20, f"`{name}` needs help text"
    assert "Example" in cmd.help, f"`autolabel {name}` help needs an example"
    for param in cmd.params:
        if isinstance(param, click.Option) and param.name not in {"help", "version"}:
            assert param.help, f"option {param.opts} of `{name}` needs help"
            assert "Example" in param.help or "e.g." in param.help, (
                f"option {param.opts} of `{name}` needs an example in its help"
            )


@pytest.mark.parametrize("name", [n for n, _ in COMMANDS])
def test_help_runs(runner: CliRunner, name: str) -> None:
    result = runner.invoke(cli, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_db_upgrade_current_check(runner: CliRunner, tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    check = runner.invoke(cli, ["--db", db, "db", "check"])
    assert check.exit_code != 0 and "autolabel db upgrade" in check.stderr
    assert runner.invoke(cli, ["--db", db, "db", "upgrade"]).exit_code == 0
    assert runner.invoke(cli, ["--db", db, "db", "check"]).exit_code == 0
    current = runner.invoke(cli, ["--db", db, "--json", "db", "current"])
    data = json.loads(current.stdout)
    assert data["revision"] == data["head"] == head_revision()


def test_db_from_env(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOLABEL_DB", str(tmp_path / "env.db"))
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    assert (tmp_path / "env.db").exists()


def test_config_show_and_bad_key(runner: CliRunner, tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[subject]\nlayer = 9\n")
    shown = runner.invoke(cli, ["--config", str(good), "config", "show"])
    assert shown.exit_code == 0 and "layer = 9" in shown.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[subject]\nlayr = 9\n")
    result = runner.invoke(cli, ["--config", str(bad), "config", "show"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert "subject.layr" in result.stderr and str(bad) in result.stderr


def test_error_is_one_line_and_debug_shows_traceback(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "autolabel.cli", "--db", "postgresql://x@127.0.0.1:1/d", "db",
            "upgrade"]
    plain = subprocess.run(args, capture_output=True, text=True)
    assert plain.returncode != 0
    assert plain.stderr.startswith("Error: cannot open database") and plain.stderr.count("\n") == 1
    debug = subprocess.run(args, capture_output=True, text=True, env={"AUTOLABEL_DEBUG": "1",
                                                                       "PATH": ""})
    assert "Traceback" in debug.stderr
