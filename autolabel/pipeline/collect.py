"""The collect stage (and ``sae train``): one streaming pass of model + SAE over the corpus.

Whether a collection is already stored is decided from cheap identities first (the model's
revision and the SAE's file hash, both read from disk), so a finished collection costs no model
load at all. The pass itself runs on an executor (this process, or shards on a Ray cluster);
results are the same either way and only this process writes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autolabel.collect import SPLITS, CollectSettings
from autolabel.config import Config
from autolabel.corpus import SplitTally
from autolabel.db import Database
from autolabel.errors import SAEError
from autolabel.executors import CollectOutcome, Executor, ModelIdentity, using_executor
from autolabel.loading import (
    Progress,
    RunContext,
    collection_spec,
    default_sae_path,
    known_collection_spec,
    known_sae,
    no_progress,
    train_default_sae,
)
from autolabel.logs import stage_logger
from autolabel.saes import TrainReport, load_sae
from autolabel.selection import parse_feature_range
from autolabel.store import (
    CollectionSpec,
    collection_by_key,
    features_done,
    finish_collection,
    register_sae,
    start_collection,
    store_feature_results,
)
from autolabel.store.saes import find_sae_by_hash

STORE_CHUNK = 256  # features per write transaction
MIN_SPLIT_DOCUMENTS = 5  # fewer documents in a split than this earns a warning
log = stage_logger()


@dataclass
class CollectSummary:
    """What a collect stage did (printed by the CLI, stored in the run summary)."""

    sae: str
    collection_id: int
    features: int
    already_done: int
    tokens: int
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        """Throughput of the streaming pass (0 when nothing had to run)."""
        return self.tokens / self.seconds if self.seconds > 0 and self.tokens else 0.0


def sae_train_stage(config: Config, database: Database, out_dir: Path | None,
                    progress: Progress = no_progress) -> tuple[TrainReport, str]:
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
                  progress: Progress = no_progress, sae_progress: Progress = no_progress,
                  ctx: RunContext | None = None,
                  executor: Executor | None = None) -> CollectSummary:
    """Collect examples and statistics for the configured features (skips ones already done).

    The pass runs on ``executor`` (default: the one ``run.executor`` names, closed at the end).
    Nothing is written before the pass has succeeded: the SAE row is registered in the same
    transaction as the first results, so a failed collection (say, an empty corpus) leaves no
    ``saes`` row behind.
    """
    start = time.perf_counter()
    ctx = ctx or RunContext(config, database, sae_progress=sae_progress)
    if not force:
        finished = _already_collected(config, database)
        if finished is not None:
            return finished
    with using_executor(ctx, executor) as runner:
        ident = runner.identity()
        features = parse_feature_range(config.collect.features, ident.sae.d_sae)
        spec = collection_spec(config, ident.model_id, ident.revision, ident.sae.content_hash)
        with database.session() as session:
            done = set() if force else _done_features(session, spec)
        todo = [f for f in features if f not in done]
        if not todo:
            return CollectSummary(_sae_name(database, ident.sae.content_hash),
                                  _collection_id(database, spec), len(features), len(features),
                                  0, 0.0)
        outcome = runner.collect(todo, collect_settings(config),
                                 _tokens_progress(progress, config.collect.tokens))
    if outcome.tokens == 0:
        raise SAEError(f"corpus {config.corpus.source!r} produced no tokens; check the source")
    warnings = split_warnings(outcome.tally, config)
    for line in warnings:
        log.warning("collect: %s", line)
    cid, name = _store(database, ident, spec, outcome, ctx.run_id)
    return CollectSummary(name, cid, len(features), len(features) - len(todo), outcome.tokens,
                          time.perf_counter() - start, warnings)


def _tokens_progress(progress: Progress, total: int) -> Callable[[int], None]:
    """Turn "n more tokens" into the stage's (done, total) progress calls."""
    seen = [0]

    def advance(n: int) -> None:
        seen[0] += n
        progress(min(seen[0], total), total)

    return advance


def _sae_name(database: Database, content_hash: str) -> str:
    """The registered name of an SAE that already has stored results."""
    with database.session() as session:
        row = find_sae_by_hash(session, content_hash)
        return row.name if row is not None else "?"


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
    row = collection_by_key(session, spec)
    return features_done(session, row.id) if row is not None else set()


def _collection_id(database: Database, spec: CollectionSpec) -> int:
    """The id of the collection row for ``spec`` (0 when there is none)."""
    with database.session() as session:
        row = collection_by_key(session, spec)
        return row.id if row is not None else 0


def collect_settings(config: Config) -> CollectSettings:
    """The collector's settings from the config."""
    k = config.collect
    return CollectSettings(
        train_top=k.train_top, train_quantile=k.train_quantile,
        validation_top=k.validation_top, validation_quantile=k.validation_quantile,
        test_top=k.test_top, test_quantile=k.test_quantile, random=k.random, n_bins=k.n_bins,
        seed=config.corpus.seed, batch_size=k.batch_size,
    )


def _store(database: Database, ident: ModelIdentity, spec: CollectionSpec,
           outcome: CollectOutcome, run_id: int | None) -> tuple[int, str]:
    """Write the results: SAE row, collection row and the first chunk in one transaction, the
    other chunks after it (a kill between chunks leaves a resumable collection)."""
    results = outcome.results
    with database.session() as session:
        sae_row = register_sae(session, ident.sae, ident.layer, ident.sae_metrics)
        sae_id, name = sae_row.id, sae_row.name
        collection_id = start_collection(session, sae_id, spec, run_id=run_id).id
        store_feature_results(session, sae_id, collection_id, results[:STORE_CHUNK])
    for lo in range(STORE_CHUNK, len(results), STORE_CHUNK):
        with database.session() as session:
            store_feature_results(session, sae_id, collection_id, results[lo:lo + STORE_CHUNK])
    with database.session() as session:
        finish_collection(session, collection_id, outcome.tokens)
    return collection_id, name


def split_warnings(tally: SplitTally, config: Config) -> list[str]:
    """A line per split that got no documents, or too few windows to fill its examples, naming
    the knob that fixes it (issue 18.7: a small token budget put every document in test)."""
    c, k = config.corpus, config.collect
    fractions = {"test": c.test_fraction, "validation": c.validation_fraction,
                 "train": 1.0 - c.test_fraction - c.validation_fraction}
    knobs = {"train": "lower corpus.test_fraction / corpus.validation_fraction",
             "validation": "raise corpus.validation_fraction",
             "test": "raise corpus.test_fraction"}
    read = sum(tally.documents.values())
    out = []
    for split in SPLITS:
        docs, windows = tally.documents[split], tally.windows[split]
        wanted = getattr(k, f"{split}_top") + getattr(k, f"{split}_quantile")
        if docs and docs >= MIN_SPLIT_DOCUMENTS and windows >= wanted:
            continue
        what = ("no documents" if not docs else
                f"only {docs} document(s), {windows} window(s) for {wanted} examples per feature")
        out.append(f"the {split} split got {what} of the {read} read (expected share "
                   f"{fractions[split]:.0%}); raise [collect] tokens (now {k.tokens:,}) to read "
                   f"more documents, or {knobs[split]}")
    return out
