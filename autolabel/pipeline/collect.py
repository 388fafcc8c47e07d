"""The collect stage (and ``sae train``): one streaming pass of model + SAE over the corpus.

Whether a collection is already stored is decided from cheap identities first (the model's
revision and the SAE's file hash, both read from disk), so a finished collection costs no model
load at all.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from autolabel.collect import CollectSettings, collect
from autolabel.config import Config
from autolabel.db import Collection, Database
from autolabel.errors import SAEError
from autolabel.loading import (
    Progress,
    RunContext,
    _noop,
    collection_spec,
    default_sae_path,
    known_collection_spec,
    known_sae,
    token_batches,
    train_default_sae,
)
from autolabel.saes import TrainReport, load_sae
from autolabel.selection import parse_feature_range
from autolabel.store import (
    CollectionSpec,
    features_done,
    finish_collection,
    register_sae,
    start_collection,
    store_feature_results,
)
from autolabel.store.saes import find_sae_by_hash

STORE_CHUNK = 256  # features per write transaction


@dataclass
class CollectSummary:
    """What a collect stage did (printed by the CLI, stored in the run summary)."""

    sae: str
    collection_id: int
    features: int
    already_done: int
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        """Throughput of the streaming pass (0 when nothing had to run)."""
        return self.tokens / self.seconds if self.seconds > 0 and self.tokens else 0.0


def sae_train_stage(config: Config, database: Database, out_dir: Path | None,
                    progress: Progress = _noop) -> tuple[TrainReport, str]:
    """``autolabel sae train``: train, save (sae-lens format), record it with its hash."""
    ctx = RunContext(config, database)
    target = out_dir or default_sae_path(config)
    report = train_default_sae(config, ctx.subject, Path(target), progress)
    sae = load_sae(str(target))
    if out_dir is None:
        sae.source = "default"
    with database.session() as session:
        record = register_sae(session, sae, ctx.subject.layer,
                              metrics={**asdict(report), "path": str(report.path)})
        name = record.name
    return report, name


def collect_stage(config: Config, database: Database, *, force: bool = False,
                  progress: Progress = _noop, sae_progress: Progress = _noop,
                  ctx: RunContext | None = None) -> CollectSummary:
    """Collect examples and statistics for the configured features (skips ones already done)."""
    start = time.perf_counter()
    ctx = ctx or RunContext(config, database, sae_progress=sae_progress)
    if not force:
        finished = _already_collected(config, database)
        if finished is not None:
            return finished
    subject, sae = ctx.subject, ctx.sae
    features = parse_feature_range(config.collect.features, sae.d_sae)
    spec = collection_spec(config, subject.model_id, subject.revision, sae.content_hash)
    with database.session() as session:
        sae_row = register_sae(session, sae, subject.layer, ctx.sae_metrics)
        done = set() if force else _done_features(session, spec)
        sae_row_id, name = sae_row.id, sae_row.name
    todo = [f for f in features if f not in done]
    if not todo:
        return CollectSummary(name, _collection_id(database, spec), len(features),
                              len(features), 0, 0.0)
    cid, n_tokens = _collect_and_store(config, database, ctx, todo, spec, sae_row_id, progress)
    return CollectSummary(name, cid, len(features), len(features) - len(todo), n_tokens,
                          time.perf_counter() - start)


def _already_collected(config: Config, database: Database) -> CollectSummary | None:
    """The summary of a finished collection of every configured feature, found without
    loading the model or the SAE; None when there is work (or only loading can tell)."""
    spec, identity = known_collection_spec(config), known_sae(config)
    if spec is None or identity is None:
        return None
    features = parse_feature_range(config.collect.features, identity.d_sae)
    with database.session() as session:
        sae_row = find_sae_by_hash(session, identity.content_hash)
        if sae_row is None or set(features) - _done_features(session, spec):
            return None
        name = sae_row.name
    return CollectSummary(name, _collection_id(database, spec), len(features), len(features),
                          0, 0.0)


def _done_features(session: Any, spec: CollectionSpec) -> set[int]:
    """Features this exact collection already stored."""
    row = session.scalar(select(Collection).where(Collection.key == spec.key()))
    return features_done(session, row.id) if row is not None else set()


def _collection_id(database: Database, spec: CollectionSpec) -> int:
    """The id of the collection row for ``spec`` (0 when there is none)."""
    with database.session() as session:
        cid = session.scalar(select(Collection.id).where(Collection.key == spec.key()))
    return int(cid or 0)


def collect_settings(config: Config) -> CollectSettings:
    """The collector's settings from the config."""
    k = config.collect
    return CollectSettings(
        train_top=k.train_top, train_quantile=k.train_quantile, test_top=k.test_top,
        test_quantile=k.test_quantile, random=k.random, n_bins=k.n_bins, seed=config.corpus.seed,
        batch_size=k.batch_size,
    )


def _collect_and_store(config: Config, database: Database, ctx: RunContext,
                       features: list[int], spec: CollectionSpec, sae_id: int,
                       progress: Progress) -> tuple[int, int]:
    """Stream the corpus once for ``features`` and store results in chunked transactions."""
    total = config.collect.tokens
    seen = [0]

    def advance(n: int) -> None:
        seen[0] += n
        progress(min(seen[0], total), total)

    batches = token_batches(config, ctx.subject.tokenizer, total)
    results = collect(ctx.subject, ctx.sae, batches, features, collect_settings(config),
                      progress=advance)
    if seen[0] == 0:
        raise SAEError(f"corpus {config.corpus.source!r} produced no tokens; check the source")
    with database.session() as session:
        collection_id = start_collection(session, sae_id, spec, run_id=ctx.run_id).id
    for lo in range(0, len(results), STORE_CHUNK):
        with database.session() as session:
            store_feature_results(session, sae_id, collection_id, results[lo:lo + STORE_CHUNK])
    with database.session() as session:
        finish_collection(session, collection_id, seen[0])
    return collection_id, seen[0]
