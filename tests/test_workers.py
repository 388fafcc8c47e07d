"""`autolabel run --worker`: the PostgreSQL work queue (claims, heartbeats, takeover) and
several worker processes sharing a batch, one of them SIGKILLed mid-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

from autolabel import db as dbm
from autolabel import workers as wk
from autolabel.config import Config
from autolabel.errors import AutolabelError
from tests.tiny import tiny_corpus, tiny_model_dir, tiny_sae_dir


def test_range_spec() -> None:
    assert wk.range_spec([0, 1, 2, 5]) == "0:3,5"
    assert wk.range_spec([7]) == "7"
    assert wk.range_spec([1, 3, 4]) == "1,3:5"


def test_sqlite_is_refused(sqlite_url: str) -> None:
    database = dbm.open_database(sqlite_url)
    assert dbm.schema_drift(database.engine) == []
    with pytest.raises(AutolabelError) as err:
        wk.run_worker(Config(), database)
    assert "PostgreSQL" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(AutolabelError):
        wk.claim(database, "w1", 60)


def _queue(pg_url: str, n_features: int = 6, batch: int = 2) -> tuple[dbm.Database, str]:
    """A migrated PostgreSQL database with one fake SAE and its planned batches."""
    database = dbm.open_database(pg_url)
    with database.session() as s:
        sae = dbm.SAERecord(name="fake", source="test", hook_name="h", d_in=4, d_sae=64,
                            architecture="jumprelu", content_hash="f" * 64)
        s.add(sae)
        s.flush()
        sae_id = sae.id
    assert wk.plan_items(database, sae_id, "k" * 64, list(range(n_features)), batch) == (
        n_features + batch - 1) // batch
    return database, "k" * 64


def _backdate(database: dbm.Database, item_id: int, seconds: float) -> None:
    with database.engine.begin() as conn:
        conn.execute(update(dbm.WorkItem).where(dbm.WorkItem.id == item_id).values(
            heartbeat_at=func.now() - text(f"interval '{seconds} seconds'")))


@pytest.mark.postgres
def test_plan_is_idempotent_and_schema_clean(pg_url: str) -> None:
    database, key = _queue(pg_url)
    assert dbm.schema_drift(database.engine) == []
    with database.session() as s:
        sae_id = s.scalar(select(dbm.SAERecord.id))
        assert sae_id is not None
    assert wk.plan_items(database, sae_id, key, list(range(6)), 2) == 0
    with database.session() as s:
        specs = s.scalars(select(dbm.WorkItem.features).order_by(dbm.WorkItem.feature_lo))
        assert list(specs) == ["0:2", "2:4", "4:6"]
    assert wk.queue_counts(database, key) == {"pending": 3}


@pytest.mark.postgres
def test_claim_skips_rows_locked_by_another_claimer(pg_url: str) -> None:
    database, key = _queue(pg_url)
    with database.session() as other:  # a second connection holding the lowest row
        first = other.scalar(select(dbm.WorkItem).order_by(dbm.WorkItem.feature_lo).limit(1)
                             .with_for_update())
        assert first is not None
        got = wk.claim(database, "w2", 60, key=key)  # must not wait for `other`
        assert got is not None and got.id != first.id and got.features == "2:4"
        assert got.status == "claimed" and got.worker == "w2" and got.attempts == 1
    again = wk.claim(database, "w3", 60, key=key)
    assert again is not None and again.id == first.id


@pytest.mark.postgres
def test_stale_claim_is_taken_over(pg_url: str) -> None:
    database, key = _queue(pg_url, n_features=2)
    item = wk.claim(database, "w1", 3, key=key)
    assert item is not None
    assert wk.claim(database, "w2", 3, key=key) is None  # fresh heartbeat: still w1's
    _backdate(database, item.id, 10)
    taken = wk.claim(database, "w2", 3, key=key)
    assert taken is not None and taken.id == item.id
    assert taken.worker == "w2" and taken.attempts == 2
    assert wk.heartbeat(database, item.id, "w1") is False  # the dead worker lost it
    wk.mark_failed(database, item.id, "w1", "late")  # and cannot touch it any more
    assert wk.queue_counts(database, key) == {"claimed": 1}


@pytest.mark.postgres
def test_heartbeat_thread_keeps_claim_and_exhausted_claims_fail(pg_url: str) -> None:
    database, key = _queue(pg_url, n_features=2)
    item = wk.claim(database, "w1", 3, key=key, max_attempts=1)
    assert item is not None
    _backdate(database, item.id, 10)
    with wk.heartbeating(database, item.id, "w1", every_s=0.2) as lost:
        time.sleep(0.8)
    assert not lost.is_set()
    assert wk.claim(database, "w2", 3, key=key, max_attempts=1) is None  # beat: not stale
    _backdate(database, item.id, 10)
    assert wk.claim(database, "w2", 3, key=key, max_attempts=1) is None  # out of attempts
    assert wk.queue_counts(database, key) == {"failed": 1}


@pytest.mark.postgres
def test_failed_batches_are_retried_then_given_up(pg_url: str) -> None:
    database, key = _queue(pg_url, n_features=2)
    for attempt in (1, 2):
        item = wk.claim(database, "w1", 60, key=key, max_attempts=2)
        assert item is not None and item.attempts == attempt
        wk.mark_failed(database, item.id, "w1", "boom")
    assert wk.claim(database, "w1", 60, key=key, max_attempts=2) is None
    with database.session() as s:
        row = s.scalar(select(dbm.WorkItem))
        assert row is not None and row.status == "failed" and row.error == "boom"


# ---------------------------------------------------------------------------------------------
# several worker processes on the tiny artefacts

N_FEATURES, BATCH, STALE_S = 12, 2, 3
EXPLAINERS = ("tokens", "llm")

WORKER = """
import json, sys
from autolabel.config import load_config
from autolabel.db import open_database
from autolabel.workers import run_worker
summary = run_worker(load_config(sys.argv[1]), open_database(sys.argv[2]),
                     worker_id=sys.argv[3], stale_after_s=float(sys.argv[4]),
                     batch_size=int(sys.argv[5]), poll_s=0.5)
print(json.dumps(summary.as_json()))
sys.exit(summary.exit_code)
"""


def _config(root: Path) -> Path:
    """Tiny artefacts, every stage listed (workers run collect/explain/score only)."""
    model, sae = tiny_model_dir(root / "model"), tiny_sae_dir(root / "sae")
    corpus = tiny_corpus(root / "corpus.txt")
    path = root / "nightly.toml"
    path.write_text(f"""
[subject]
model = "{model}"
layer = 2
[sae]
sae = "{sae}"
[corpus]
source = "{corpus}"
window = 16
[collect]
tokens = 3000
features = "0:{N_FEATURES}"
batch_size = 4
[llm]
provider = "local"
model = "{model}"
[explain]
explainers = {json.dumps(list(EXPLAINERS))}
[scoring]
simulator = "embedding"
[search]
embedding_model = "hash"
""")
    return path


def _spawn(config: Path, url: str, worker: str, tmp: Path, crash: str | None = None
           ) -> subprocess.Popen[str]:
    env = {**os.environ, "AUTOLABEL_CACHE_DIR": str(tmp / "cache"), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("AUTOLABEL_CRASH_AT", None)
    if crash:
        env["AUTOLABEL_CRASH_AT"] = crash
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(config), url, worker, str(STALE_S), str(BATCH)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_claim(database: dbm.Database, worker: str, proc: subprocess.Popen[str]) -> None:
    """Block until ``worker`` holds a batch (so the crash really happens mid-queue)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        with database.session() as s:
            if s.scalar(select(dbm.WorkItem.id).where(dbm.WorkItem.worker == worker)):
                return
        time.sleep(0.3)
    raise AssertionError(f"{worker} never claimed a batch: {proc.communicate()[1][-2000:]}")


@pytest.mark.postgres
@pytest.mark.slow
def test_three_workers_one_killed_every_feature_done_once(pg_url: str, tmp_path: Path) -> None:
    config, database = _config(tmp_path), dbm.open_database(pg_url)
    crasher = _spawn(config, pg_url, "w-crash", tmp_path, crash="score:1")
    _wait_for_claim(database, "w-crash", crasher)
    others = [_spawn(config, pg_url, f"w{i}", tmp_path) for i in (1, 2)]
    crash_out = crasher.communicate(timeout=600)
    assert crasher.returncode == -signal.SIGKILL, (crash_out[0][-3000:], crash_out[1][-2000:])
    summaries = []
    for proc in others:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        summaries.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(s["features"] for s in summaries) == N_FEATURES  # the dead one's batch redone
    _check_everything_done_once(database)


def _check_everything_done_once(database: dbm.Database) -> None:
    """Every feature collected, explained by both explainers and scored, each exactly once."""
    with database.session() as s:
        items = list(s.scalars(select(dbm.WorkItem)))
        assert len(items) == N_FEATURES // BATCH and {i.status for i in items} == {"done"}
        taken = [i for i in items if i.attempts == 2]
        assert len(taken) == 1 and taken[0].worker in {"w1", "w2"}  # the SIGKILLed batch
        feats = {f.id: f.index for f in s.scalars(select(dbm.Feature))
                 if f.collection_id is not None}
        assert sorted(feats.values()) == list(range(N_FEATURES))
        expl = s.execute(select(dbm.Explanation.feature_id, dbm.Explanation.explainer,
                                func.count()).group_by(dbm.Explanation.feature_id,
                                                       dbm.Explanation.explainer)).all()
        assert sorted((feats[f], e, n) for f, e, n in expl) == sorted(
            (i, e, 1) for i in range(N_FEATURES) for e in EXPLAINERS)
        ok = set(s.scalars(select(dbm.Explanation.id).where(dbm.Explanation.status == "ok")))
        scores = s.execute(select(dbm.Score.explanation_id, dbm.Score.scorer, func.count())
                           .group_by(dbm.Score.explanation_id, dbm.Score.scorer)).all()
        assert ok and {(e, "simulation", 1) for e in ok} == set(scores)
