"""Shared fixtures: temp databases, a real PostgreSQL server, CLI runner."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

# One llama.cpp server for the whole session (imported into a test module, a session fixture
# is that module's own: two modules used to start two 1.4 GB servers).
from tests.llama_server import llama_server  # noqa: F401  (fixture)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never let a test touch the user's default database or config."""
    monkeypatch.setenv("AUTOLABEL_DB", str(tmp_path / "autolabel.db"))
    monkeypatch.delenv("AUTOLABEL_CONFIG", raising=False)
    for name in list(os.environ):
        if name.startswith("AUTOLABEL_") and "__" in name:
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _isolated_sanity_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulator sanity reports are cached on disk; tests must not share (or leave) them."""
    from autolabel.scoring import sanity

    monkeypatch.setattr(sanity, "_SANITY_CACHE", {})
    monkeypatch.setattr(sanity, "_sanity_path", lambda key: tmp_path / "sanity" / f"{key}.json")


@pytest.fixture
def runner() -> CliRunner:
    """A click runner (stderr kept apart so error lines can be asserted)."""
    return CliRunner()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file URL."""
    return f"sqlite:///{tmp_path / 'test.db'}"


def _pg_bin(name: str) -> str | None:
    """Find a PostgreSQL server binary on PATH or in Debian's versioned folder."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """initdb refuses to run as root: run the server as the 'postgres' user when we are root."""
    if os.geteuid() == 0 and shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Start a throwaway PostgreSQL server on a loopback port; yields its base URL.

    Skips when the server binaries are absent (the Debian package ``postgresql`` provides them;
    ``.ci/run`` installs it so these tests always run in CI).
    """
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found")
    root = Path(tempfile.mkdtemp(prefix="autolabel-pg-"))
    data, port = root / "data", _free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(
        _as_postgres_user([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"]),
        check=True, capture_output=True,
    )
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres_user([pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w",
                           "start"]),
        check=True, capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_postgres_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: str) -> str:
    """A fresh, empty database on the throwaway server."""
    import psycopg

    name = f"t{int(time.time() * 1e6) % 10**12}"
    with psycopg.connect(f"{pg_server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{pg_server}/{name}"
