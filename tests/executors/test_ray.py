"""The Ray executor on a real local Ray cluster: sharded collection equals one process, exactly,
on the tiny model and SAE; the CLI gives the same database; an unreachable cluster is one line;
the old work queue is gone (issue 17)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from autolabel.cli import cli
from autolabel.config import load_config
from autolabel.db import open_database
from autolabel.executors import LocalExecutor, RayExecutor, make_executor
from autolabel.loading import RunContext
from autolabel.pipeline.collect import collect_settings
from tests.collect.snapshots import collected
from tests.collect.test_determinism import signature
from tests.executors.conftest import tiny_config_text
from tests.executors.workers_stub import Squarer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads (and lose ~10x on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def context(parts: dict[str, Path], tmp_path: Path, **run: Any) -> RunContext:
    path = tmp_path / "c.toml"
    path.write_text(tiny_config_text(parts))
    overrides = {f"run.{k}": v for k, v in run.items()}
    config = load_config(path, overrides=overrides, environ={})
    return RunContext(config, open_database(str(tmp_path / "x.db")))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_sharded_collection_equals_one_process(ray_cluster: Any, tiny_parts: dict[str, Path],
                                               tmp_path: Path) -> None:
    """Two actors, each over its shard of documents, merged: the very same results, and the
    same model identity, as one local pass."""
    local_ctx = context(tiny_parts, tmp_path)
    local = LocalExecutor(local_ctx)
    settings = collect_settings(local_ctx.config)
    want = local.collect(list(range(32)), settings, lambda n: None)
    ray_ctx = context(tiny_parts, tmp_path, executor="ray", ray_workers=2)
    executor = make_executor(ray_ctx)
    assert isinstance(executor, RayExecutor)
    seen: list[int] = []
    try:
        assert executor.identity() == local.identity()
        got = executor.collect(list(range(32)), settings, seen.append)
    finally:
        executor.close()
    assert signature(got.results) == signature(want.results)
    assert got.tokens == want.tokens == sum(seen)
    assert got.tally == want.tally
    assert not {"subject", "sae"} & set(ray_ctx.loaded)  # the actors did (the driver only
    # loaded the tokenizer, to plan where the token budget ends)


@pytest.mark.slow
def test_cli_executor_ray_gives_the_same_database(ray_cluster: Any, tiny_parts: dict[str, Path],
                                                   tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(tiny_config_text(tiny_parts))
    dbs = {}
    for name, extra in (("local", []), ("ray", ["--executor", "ray"])):
        dbs[name] = tmp_path / f"{name}.db"
        result = CliRunner().invoke(cli, ["--db", str(dbs[name]), "--config", str(config),
                                          "--json", "collect", *extra])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["tokens"] > 3000
    assert collected(dbs["ray"]) == collected(dbs["local"])


@pytest.mark.slow
def test_actor_pool_maps_every_batch_once(ray_cluster: Any, tiny_parts: dict[str, Path],
                                          tmp_path: Path) -> None:
    """The pool the explain/score stages will use: each worker built once, every batch
    answered, on Ray as locally."""
    batches = [list(range(i, i + 3)) for i in range(0, 30, 3)]
    for ctx in (context(tiny_parts, tmp_path),
                context(tiny_parts, tmp_path, executor="ray", ray_workers=2)):
        executor = make_executor(ctx)
        try:
            got = dict((tuple(b), r) for b, r in executor.map_batches(Squarer, "run", batches))
        finally:
            executor.close()
        assert got == {tuple(b): [x * x for x in b] for b in batches}


def test_unreachable_ray_address_fails_with_one_line(tiny_parts: dict[str, Path],
                                                      tmp_path: Path) -> None:
    pytest.importorskip("ray")
    config = tmp_path / "c.toml"
    config.write_text(tiny_config_text(tiny_parts))
    address = f"127.0.0.1:{free_port()}"
    out = subprocess.run([sys.executable, "-m", "autolabel.cli", "--db", str(tmp_path / "u.db"),
                          "--config", str(config), "collect", "--ray-address", address],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith(f"Error: cannot reach the Ray cluster at {address}"), out.stderr
    assert "ray start --head" in lines[-1] and "Traceback" not in out.stderr
    assert not (tmp_path / "u.db").exists()  # nothing was written (the new file is removed)


def test_the_old_work_queue_is_gone() -> None:
    """No module, option, table or README section of the PostgreSQL queue is left."""
    assert not (ROOT / "autolabel" / "workers.py").exists()
    sources = [p.read_text() for p in (ROOT / "autolabel").rglob("*.py")
               if "migrations" not in p.parts]  # 0003 made the table, 0011 drops it
    for needle in ("work_items", "WorkItem", "SKIP LOCKED", "run --worker", "heartbeating"):
        assert not [s for s in sources if needle in s], needle
    help_text = CliRunner().invoke(cli, ["run", "--help"]).output
    assert "--worker" not in help_text and "--executor" in help_text
    readme = (ROOT / "README.md").read_text()
    assert "run --worker" not in readme and "ray start --head" in readme
