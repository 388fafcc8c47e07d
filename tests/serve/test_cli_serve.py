"""`autolabel serve`: loopback by default, remote only with a flag and a warning, a database at
the current schema (the server never migrates), and a real server answering over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from autolabel import db as dbm
from autolabel.cli import cli
from autolabel.errors import DatabaseError, InputError
from autolabel.serve import check_host, is_loopback, open_server
from tests.serve.builder import SAE_NAME, build


def test_loopback_detection() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "192.168.1.10", "::", "no-such-host.invalid"):
        assert not is_loopback(host), host


def test_remote_bind_needs_the_flag_and_warns() -> None:
    assert check_host("127.0.0.1", allow_remote=False) is None
    with pytest.raises(InputError, match="--allow-remote"):
        check_host("0.0.0.0", allow_remote=False)
    warning = check_host("0.0.0.0", allow_remote=True)
    assert warning and "no authentication" in warning and "0.0.0.0" in warning


def test_cli_refuses_remote_without_flag(runner: CliRunner, sqlite_url: str) -> None:
    dbm.open_database(sqlite_url).close()
    result = runner.invoke(cli, ["--db", sqlite_url, "serve", "--host", "0.0.0.0"])
    assert result.exit_code != 0
    assert "refusing to serve on 0.0.0.0" in result.stderr and "--allow-remote" in result.stderr


def test_server_never_migrates(sqlite_url: str) -> None:
    database = dbm.open_database(sqlite_url, migrate=False)
    dbm.upgrade(database.engine, "0001")
    with pytest.raises(DatabaseError, match="autolabel db upgrade"):
        open_server(database, lambda model: None)
    assert dbm.current_revision(database.engine) == "0001"
    database.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_autolabel_serve_answers_over_http(tmp_path: Path) -> None:
    """The real command in a subprocess: serves the API and pages until interrupted."""
    url = f"sqlite:///{tmp_path / 'served.db'}"
    build(url, tmp_path)
    port = _free_port()
    env = {**os.environ, "AUTOLABEL_SEARCH__EMBEDDING_MODEL": "hash"}
    proc = subprocess.Popen([sys.executable, "-m", "autolabel.cli", "--db", url, "serve",
                             "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        body = None
        deadline = time.time() + 120
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/api/search?q=months&mode=semantic") as reply:
                    body = json.loads(reply.read())
            except OSError:
                time.sleep(0.5)
        assert body is not None, "server did not answer"
        assert body["results"][0]["feature"] == f"{SAE_NAME}:1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/feature/{SAE_NAME}/1") as reply:
            page = reply.read().decode()
            assert "January" in page and reply.headers["Content-Security-Policy"]
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    assert "read-only at http://127.0.0.1:" in err
