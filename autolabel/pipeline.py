"""Stages of a labeling batch, each callable alone and each skipping work already done.

A stage takes the effective :class:`~autolabel.config.Config` and an open database, does its
work in memory, and writes results in transactions keyed by content hashes of its inputs, so
re-running a finished stage is a no-op and a killed one resumes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolabel.errors import SAEError

if TYPE_CHECKING:
    from torch import Tensor

    from autolabel.config import Config
    from autolabel.db import Database
    from autolabel.saes import LoadedSAE, TrainReport
    from autolabel.subject import SubjectModel

Progress = Callable[[int, int], None]  # (done, total)
STORE_CHUNK = 256  # features per write transaction


def _noop(done: int, total: int) -> None:
    """Progress sink used when the caller shows none."""


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


def load_subject_for(config: Config) -> SubjectModel:
    """The subject model named by the config, cut after the configured layer."""
    from transformers.utils import logging as hf_logging

    from autolabel.subject import load_subject

    hf_logging.disable_progress_bar()  # our own progress bars are the ones that matter
    s = config.subject
    return load_subject(s.model, s.layer, device=s.device, dtype=s.dtype)


def token_batches(config: Config, subject: SubjectModel, max_tokens: int) -> Iterator[Any]:
    """Padded batches of corpus windows (train and test documents, split by document hash)."""
    from autolabel.corpus import batch_windows, iter_windows

    c = config.corpus
    windows = iter_windows(c.source, subject.tokenizer, window=c.window, seed=c.seed,
                           test_fraction=c.test_fraction, text_field=c.text_field,
                           max_tokens=max_tokens)
    pad = subject.tokenizer.pad_token_id
    return batch_windows(windows, config.collect.batch_size, 0 if pad is None else int(pad))


def train_default_sae(config: Config, subject: SubjectModel, out_dir: Path,
                      progress: Progress = _noop) -> TrainReport:
    """Train the configured small SAE on the configured corpus (held-out tokens for the report)."""
    from autolabel.saes import train_sae

    s = config.sae
    eval_tokens = 100_000
    batches = ((b.input_ids, b.attention_mask)
               for b in token_batches(config, subject, 2 * (s.train_tokens + eval_tokens)))
    return train_sae(subject, batches, out_dir, d_sae=s.d_sae, k=s.k,
                     architecture=s.architecture, n_train_tokens=s.train_tokens,
                     n_eval_tokens=eval_tokens, seed=config.corpus.seed, progress=progress)


def resolve_sae(config: Config, subject: SubjectModel,
                progress: Progress = _noop) -> tuple[LoadedSAE, dict[str, Any] | None]:
    """Load the configured SAE; the offline default is trained once (under a lock) and cached."""
    from filelock import FileLock

    from autolabel.saes import REPORT_FILE, check_fits, default_sae_dir, load_sae

    spec, metrics = config.sae.sae, None
    if spec == "default":
        out = default_sae_dir(subject, config.sae.d_sae, config.sae.k)
        with FileLock(str(out) + ".lock", timeout=3600):
            if not (out / "cfg.json").is_file():
                train_default_sae(config, subject, out, progress)
        sae = load_sae(str(out), device=config.subject.device)
        sae.source = "default"
        report = out / REPORT_FILE
        metrics = json.loads(report.read_text()) if report.is_file() else None
    else:
        sae = load_sae(spec, device=config.subject.device)
    check_fits(sae, subject)
    return sae, metrics


def sae_train_stage(config: Config, database: Database, out_dir: Path | None,
                    progress: Progress = _noop) -> tuple[TrainReport, str]:
    """``autolabel sae train``: train, save (sae-lens format), record it with its hash."""
    from autolabel.saes import default_sae_dir, load_sae
    from autolabel.store import register_sae

    subject = load_subject_for(config)
    target = out_dir or default_sae_dir(subject, config.sae.d_sae, config.sae.k)
    report = train_default_sae(config, subject, Path(target), progress)
    sae = load_sae(str(target))
    if out_dir is None:
        sae.source = "default"
    with database.session() as session:
        record = register_sae(session, sae, subject.layer,
                              metrics=_report_dict(report))
        name = record.name
    return report, name


def _report_dict(report: TrainReport) -> dict[str, Any]:
    """A training report as JSON-ready metrics."""
    from dataclasses import asdict

    return {**asdict(report), "path": str(report.path)}


def collect_stage(config: Config, database: Database, *, force: bool = False,
                  progress: Progress = _noop, sae_progress: Progress = _noop) -> CollectSummary:
    """Collect examples and statistics for the configured features (skips ones already done)."""
    from autolabel.store import find_collection, parse_feature_range, register_sae

    start = time.perf_counter()
    subject = load_subject_for(config)
    sae, metrics = resolve_sae(config, subject, sae_progress)
    features = parse_feature_range(config.collect.features, sae.d_sae)
    spec = _collection_spec(config, subject, sae)
    with database.session() as session:
        sae_row = register_sae(session, sae, subject.layer, metrics)
        done = _done_features(session, spec, force)
        sae_row_id, name = sae_row.id, sae_row.name
        finished = find_collection(session, spec)
    todo = [f for f in features if f not in done]
    if not todo:
        cid = finished.id if finished else 0
        return CollectSummary(name, cid, len(features), len(features), 0, 0.0)
    cid, n_tokens = _collect_and_store(config, database, subject, sae, todo, spec, sae_row_id,
                                       progress)
    return CollectSummary(name, cid, len(features), len(features) - len(todo), n_tokens,
                          time.perf_counter() - start)


def _done_features(session: Any, spec: Any, force: bool) -> set[int]:
    """Features this exact collection already stored (none when forced)."""
    from sqlalchemy import select

    from autolabel.db import Collection
    from autolabel.store import features_done

    if force:
        return set()
    row = session.scalar(select(Collection).where(Collection.key == spec.key()))
    return features_done(session, row.id) if row is not None else set()


def _collection_spec(config: Config, subject: SubjectModel, sae: LoadedSAE) -> Any:
    """The identity of a collection: model, SAE hash, corpus, window, seed, layer, settings."""
    from autolabel.corpus import corpus_fingerprint
    from autolabel.store import CollectionSpec

    c, k = config.corpus, config.collect
    settings = k.model_dump(exclude={"features", "tokens", "batch_size"})
    return CollectionSpec(
        model_id=subject.model_id, model_revision=subject.revision, sae_hash=sae.content_hash,
        layer=subject.layer, corpus=c.source,
        corpus_fingerprint=corpus_fingerprint(c.source, c.text_field), window=c.window,
        seed=c.seed, test_fraction=c.test_fraction, n_tokens=k.tokens, settings=settings,
    )


def _collect_and_store(config: Config, database: Database, subject: SubjectModel,
                       sae: LoadedSAE, features: list[int], spec: Any, sae_id: int,
                       progress: Progress) -> tuple[int, int]:
    """Stream the corpus once for ``features`` and store results in chunked transactions."""
    from autolabel.collect import CollectSettings, collect
    from autolabel.store import finish_collection, start_collection, store_feature_results

    k = config.collect
    settings = CollectSettings(
        train_top=k.train_top, train_quantile=k.train_quantile, test_top=k.test_top,
        test_quantile=k.test_quantile, random=k.random, n_bins=k.n_bins, seed=config.corpus.seed,
        batch_size=k.batch_size,
    )
    seen = [0]

    def advance(n: int) -> None:
        seen[0] += n
        progress(min(seen[0], k.tokens), k.tokens)

    results = collect(subject, sae, token_batches(config, subject, k.tokens), features,
                      settings, progress=advance)
    if seen[0] == 0:
        raise SAEError(f"corpus {config.corpus.source!r} produced no tokens; check the source")
    with database.session() as session:
        collection_id = start_collection(session, sae_id, spec, run_id=None).id
    for lo in range(0, len(results), STORE_CHUNK):
        with database.session() as session:
            store_feature_results(session, sae_id, collection_id, results[lo:lo + STORE_CHUNK])
    with database.session() as session:
        finish_collection(session, collection_id, seen[0])
    return collection_id, seen[0]


def activations_of(subject: SubjectModel, sae: LoadedSAE, input_ids: Tensor,
                   attention_mask: Tensor) -> Tensor:
    """SAE latents ``[B, T, d_sae]`` for a batch (used by audits and benchmarks)."""
    resid = subject.resid(input_ids, attention_mask)
    flat = sae.encode(resid.reshape(-1, resid.shape[-1]))
    return flat.reshape(*resid.shape[:2], -1)
