"""Stages of a labeling batch, each callable alone and each skipping work already done.

A stage takes the effective :class:`~autolabel.config.Config` and an open database, does its
work in memory, and writes results in transactions keyed by content hashes of its inputs, so
re-running a finished stage is a no-op and a killed one resumes.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolabel.errors import NotFoundError, SAEError

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
    batches = ((b.input_ids, b.attention_mask)
               for b in token_batches(config, subject, 2 * (s.train_tokens + s.eval_tokens)))
    return train_sae(subject, batches, out_dir, d_sae=s.d_sae, k=s.k,
                     architecture=s.architecture, n_train_tokens=s.train_tokens,
                     n_eval_tokens=s.eval_tokens, seed=config.corpus.seed, progress=progress)


def resolve_sae(config: Config, subject: SubjectModel,
                progress: Progress = _noop) -> tuple[LoadedSAE, dict[str, Any] | None]:
    """Load the configured SAE; the offline default is trained once (under a lock) and cached."""
    from filelock import FileLock

    from autolabel.saes import REPORT_FILE, check_fits, default_sae_dir, load_sae

    spec, metrics = config.sae.sae, None
    if spec == "default":
        out = default_sae_dir(subject, config.sae.d_sae, config.sae.k)
        with FileLock(str(out) + ".train.lock", timeout=3600):  # one trainer at a time
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


# ---------------------------------------------------------------------------------------------
# explain


@dataclass
class ExplainSummary:
    """What an explain stage did."""

    sae: str
    features: int
    created: int
    skipped: int
    statuses: dict[str, int]
    llm: dict[str, float]
    seconds: float


def _feature_context(config: Config, database: Database, sae_name: str | None,
                     spec: str | None) -> tuple[Any, list[Any], Any]:
    """The SAE row, its selected collected features, and a token decoder for them."""
    from autolabel.store import TokenDecoder, feature_model_id, find_sae, select_features
    from autolabel.subject import load_tokenizer

    with database.session() as session:
        sae = find_sae(session, sae_name)
        features = select_features(session, sae.id, spec, sae.d_sae)
        model_id = feature_model_id(session, features[0]) if features else None
    if not features:
        raise NotFoundError(f"SAE {sae.name!r} has no collected features"
                            f"{' in ' + spec if spec else ''}; run `autolabel collect` first")
    return sae, features, TokenDecoder(load_tokenizer(model_id or config.subject.model))


def train_texts(database: Database, feature_id: int, decode: Any) -> list[Any]:
    """A feature's train-split examples (top + quantile) as decoded text for explainers."""
    from autolabel.explain import ExampleText
    from autolabel.store import load_examples

    with database.session() as session:
        rows = load_examples(session, feature_id, split="train", kinds=("top", "quantile"))
    return [ExampleText(tokens=decode(r.token_ids.tolist()),
                        activations=[float(a) for a in r.activations],
                        document_id=r.document_id) for r in rows]


def corpus_background(config: Config, decode: Any, max_tokens: int = 200_000) -> dict[str, float]:
    """Token frequencies of *train* documents of the corpus (TokenStats' background)."""
    from collections import Counter

    from autolabel.corpus import iter_windows

    c = config.corpus
    counts: Counter[int] = Counter()
    for window in iter_windows(c.source, decode.tokenizer, window=c.window, seed=c.seed,
                               test_fraction=c.test_fraction, text_field=c.text_field,
                               max_tokens=max_tokens):
        if window.split == "train":
            counts.update(window.token_ids[1:])
    ids = list(counts)
    return {tok: float(counts[i]) for i, tok in zip(ids, decode(ids), strict=True)}


def explain_stage(config: Config, database: Database, *, sae_name: str | None = None,
                  features: str | None = None, use_cache: bool = True, run_id: int | None = None,
                  client: Any = None, progress: Progress = _noop) -> ExplainSummary:
    """Explain every selected feature with each configured explainer (train split only)."""
    start = time.perf_counter()
    sae, rows, decode = _feature_context(config, database, sae_name, features)
    texts = {f.id: train_texts(database, f.id, decode) for f in rows}
    statuses: dict[str, int] = {}
    created = skipped = 0
    llm_totals: dict[str, float] = {}
    for name in config.explain.explainers:
        if name == "tokens":
            c, s = _explain_tokens(config, database, texts, decode, run_id, statuses)
        else:
            client = client or _llm_client(config, database, run_id, use_cache)
            c, s = _explain_llm(config, database, texts, client, run_id, statuses, progress)
            llm_totals = dict(getattr(client, "totals", {}))
        created, skipped = created + c, skipped + s
    return ExplainSummary(sae.name, len(rows), created, skipped, statuses, llm_totals,
                          time.perf_counter() - start)


def _llm_client(config: Config, database: Database, run_id: int | None,
                use_cache: bool) -> Any:
    """The configured LLM client, recorded in ``llm_calls`` (cache + budget)."""
    from autolabel.llm import RecordingClient, make_client

    client = make_client(config.llm.model_copy(update={"max_cost": None}), None)
    return RecordingClient(client, database, run_id=run_id, use_cache=use_cache,
                           max_cost=config.llm.max_cost,
                           max_tokens_total=config.llm.max_total_tokens)


def _explain_tokens(config: Config, database: Database, texts: dict[int, list[Any]],
                    decode: Any, run_id: int | None,
                    statuses: dict[str, int]) -> tuple[int, int]:
    """TokenStats baseline for features that lack it."""
    from autolabel.explain import TokenStatsExplainer

    explainer = TokenStatsExplainer()
    todo = _missing(database, texts, "tokens", "", explainer.prompt_hash, 1)
    if not todo:
        return 0, len(texts)
    background = corpus_background(config, decode)
    results = {fid: [explainer.explain(texts[fid], background)] for fid in todo}
    _store_candidates(database, results, run_id, statuses)
    return len(todo), len(texts) - len(todo)


def _explain_llm(config: Config, database: Database, texts: dict[int, list[Any]], client: Any,
                 run_id: int | None, statuses: dict[str, int],
                 progress: Progress) -> tuple[int, int]:
    """LLM candidates (best-of-k) in chunks; each chunk is stored before the next starts."""
    from autolabel.explain import LLMExplainer

    k = config.explain.k
    explainer = LLMExplainer(client, k=k, seed=config.scoring.seed,
                             temperature=config.llm.temperature)
    todo = _missing(database, texts, "llm", client.model, explainer.prompt_hash, k)
    chunk = max(1, config.collect.batch_size)
    for done in range(0, len(todo), chunk):
        ids = todo[done:done + chunk]
        results = explainer.explain_many([texts[f] for f in ids])
        _store_candidates(database, dict(zip(ids, results, strict=True)), run_id, statuses)
        progress(done + len(ids), len(todo))
    return len(todo), len(texts) - len(todo)


def _missing(database: Database, texts: dict[int, list[Any]], explainer: str, llm_model: str,
             prompt_hash: str, k: int) -> list[int]:
    """Features lacking a final candidate.

    Status 'error' is retried (a server hiccup), except for features whose train examples never
    activate: their error is a fact about the data, and retrying it every night is noise.
    """
    from autolabel.store import existing_explanations

    with database.session() as session:
        have = existing_explanations(session, list(texts), explainer, llm_model, prompt_hash)

    def final(f: int, c: int) -> bool:
        row = have.get((f, c))
        return row is not None and (row.status != "error" or not _activates(texts[f]))

    return [f for f in texts if not all(final(f, c) for c in range(k))]


def _activates(examples: list[Any]) -> bool:
    """Whether any train example of a feature has a positive activation."""
    return any(a > 0 for e in examples for a in e.activations)


def _store_candidates(database: Database, results: dict[int, list[Any]], run_id: int | None,
                      statuses: dict[str, int]) -> None:
    """Insert candidates (or update a previously errored one) in one transaction."""
    from autolabel.db import Explanation
    from autolabel.store import existing_explanations

    with database.session() as session:
        for fid, candidates in results.items():
            for cand in candidates:
                have = existing_explanations(session, [fid], cand.explainer, cand.llm_model,
                                             cand.prompt_hash)
                row = have.get((fid, cand.candidate)) or Explanation(
                    feature_id=fid, explainer=cand.explainer, llm_model=cand.llm_model,
                    prompt_hash=cand.prompt_hash, candidate=cand.candidate)
                row.text, row.status, row.error = cand.text, cand.status, cand.error
                row.raw_reply, row.llm_call_id = cand.raw_reply, cand.call_id
                row.settings, row.run_id = cand.settings, run_id
                session.add(row)
                statuses[cand.status] = statuses.get(cand.status, 0) + 1


# ---------------------------------------------------------------------------------------------
# score


@dataclass
class ScoreSummary:
    """What a score stage did, including which simulator it used and why."""

    sae: str
    scored: int
    skipped: int
    simulator: str
    sanity: dict[str, Any] | None
    mean_score: float | None
    mean_floor: float | None
    seconds: float


def test_sequences(database: Database, feature_id: int, decode: Any) -> tuple[list[Any], float]:
    """Held-out scoring data (test top + quantile + random) and the train max for scaling.

    Only ``split == 'test'`` rows are returned: documents are split by hash before collection,
    so nothing here was shown to an explainer.
    """
    from autolabel.scorers import ScoredSequence
    from autolabel.store import load_examples

    with database.session() as session:
        test = load_examples(session, feature_id, split="test")
        train = load_examples(session, feature_id, split="train", kinds=("top",))
    scale = max((e.max_activation for e in train), default=0.0)
    seqs = [ScoredSequence(tokens=decode(e.token_ids.tolist()),
                           activations=[float(a) for a in e.activations], kind=e.kind,
                           document_id=e.document_id) for e in test]
    return seqs, scale


def pick_floor_explanation(explanations: list[Any], feature_id: int, seed: int) -> Any | None:
    """A wrong explanation for the floor: another feature's, chosen reproducibly."""
    import random

    others = [e for e in explanations if e.feature_id != feature_id]
    if not others:
        return None
    return random.Random(seed * 1_000_003 + feature_id).choice(others)


FALLBACK_FLOOR_TEXT = "words related to cooking and kitchen utensils"


def _make_scorer(config: Config, name: str, client: Any) -> tuple[Any, dict[str, Any] | None]:
    """A scorer object; simulation picks its simulator (and may run the sanity check)."""
    from autolabel import scorers

    if name == "simulation":
        from autolabel.embed import get_embedder

        simulator, report = scorers.choose_simulator(
            config.scoring.simulator, client,
            lambda: get_embedder(config.search.embedding_model))
        return scorers.SimulationScorer(simulator), (report.__dict__ if report else None)
    cls = scorers.DetectionScorer if name == "detection" else scorers.FuzzingScorer
    return cls(client, seed=config.scoring.seed), None


def score_stage(config: Config, database: Database, *, sae_name: str | None = None,
                features: str | None = None, scorer_names: list[str] | None = None,
                use_cache: bool = True, run_id: int | None = None, client: Any = None,
                progress: Progress = _noop) -> ScoreSummary:
    """Score ok explanations on held-out data, each beside its floor; mark the best per feature."""
    from autolabel.store import mark_best, ok_explanations

    start = time.perf_counter()
    sae, rows, decode = _feature_context(config, database, sae_name, features)
    with database.session() as session:
        explanations = ok_explanations(session, [f.id for f in rows])
    names = scorer_names or list(config.scoring.scorers)
    if client is None and scoring_needs_llm(config, names):
        client = _llm_client(config, database, run_id, use_cache)
    totals = {"scored": 0, "skipped": 0}
    values: list[tuple[float, float]] = []
    sim_name, sanity = "", None
    for name in names:
        scorer, report = _make_scorer(config, name, client)
        if name == "simulation":
            sim_name, sanity = scorer.simulator.name, report
        _score_all(config, database, scorer, name, explanations, decode, run_id, totals,
                   values, progress)
    with database.session() as session:
        mark_best(session, [f.id for f in rows])
    mean = (sum(v for v, _ in values) / len(values)) if values else None
    floor = (sum(f for _, f in values) / len(values)) if values else None
    return ScoreSummary(sae.name, totals["scored"], totals["skipped"], sim_name, sanity, mean,
                        floor, time.perf_counter() - start)


def _score_all(config: Config, database: Database, scorer: Any, name: str,
               explanations: list[Any], decode: Any, run_id: int | None,
               totals: dict[str, int], values: list[tuple[float, float]],
               progress: Progress) -> None:
    """Score each explanation lacking this scorer's score; one transaction per explanation."""
    from autolabel.store import scored_keys

    sim = scorer.simulator.name if name == "simulation" else ""
    with database.session() as session:
        done = scored_keys(session, [e.id for e in explanations], name, sim)
    todo = [e for e in explanations if e.id not in done]
    totals["skipped"] += len(explanations) - len(todo)
    cache: dict[int, tuple[list[Any], float]] = {}
    for i, expl in enumerate(todo):
        if expl.feature_id not in cache:
            cache[expl.feature_id] = test_sequences(database, expl.feature_id, decode)
        seqs, scale = cache[expl.feature_id]
        wrong = pick_floor_explanation(explanations, expl.feature_id, config.scoring.seed)
        result, floor = _score_pair(scorer, name, expl.text, wrong, seqs, scale)
        _store_score(database, expl.id, name, sim, result, floor, wrong, run_id)
        totals["scored"] += 1
        if result.value is not None and floor.value is not None:
            values.append((result.value, floor.value))
        progress(i + 1, len(todo))


def _score_pair(scorer: Any, name: str, text: str, wrong: Any, seqs: list[Any],
                scale: float) -> tuple[Any, Any]:
    """The explanation's score and its floor (same scorer, same data, wrong explanation)."""
    wrong_text = wrong.text if wrong is not None else FALLBACK_FLOOR_TEXT
    if name == "simulation":
        return scorer.score(text, seqs, scale), scorer.score(wrong_text, seqs, scale)
    active = [s for s in seqs if s.kind != "random"]
    inactive = [s for s in seqs if s.kind == "random"]
    return scorer.score(text, active, inactive), scorer.score(wrong_text, active, inactive)


def _store_score(database: Database, explanation_id: int, scorer: str, simulator: str,
                 result: Any, floor: Any, wrong: Any, run_id: int | None) -> None:
    """One score row with its floor; failures are statuses with the details kept."""
    from autolabel.db import Score

    details = {**result.details, "floor": {"status": floor.status, "details": floor.details,
                                           "text": wrong.text if wrong else FALLBACK_FLOOR_TEXT}}
    with database.session() as session:
        session.add(Score(
            explanation_id=explanation_id, scorer=scorer, simulator=simulator,
            value=result.value, floor_value=floor.value,
            floor_explanation_id=wrong.id if wrong is not None else None,
            n_examples=result.n_examples, status=result.status, details=details, run_id=run_id))


# ---------------------------------------------------------------------------------------------
# the nightly batch

CRASH_ENV = "AUTOLABEL_CRASH_AT"  # fault injection for the crash-safety test: "stage:n"
EXIT_OK, EXIT_FAILED, EXIT_PARTIAL = 0, 1, 3


@dataclass
class StageResult:
    """One stage's outcome inside a run."""

    stage: str
    status: str  # ok | partial | failed | skipped
    seconds: float
    summary: dict[str, Any]


@dataclass
class RunSummary:
    """What ``autolabel run`` did; also stored as JSON in ``runs.summary``."""

    run_id: int
    status: str  # ok | partial | failed
    stages: list[StageResult]
    report: str | None
    seconds: float
    error: str | None = None

    @property
    def exit_code(self) -> int:
        """0 ok, 1 failed, 3 partial (budget or deadline hit; the next run resumes)."""
        return {"ok": EXIT_OK, "partial": EXIT_PARTIAL}.get(self.status, EXIT_FAILED)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"run_id": self.run_id, "status": self.status, "report": self.report,
                "seconds": round(self.seconds, 2), "error": self.error,
                "stages": [s.__dict__ for s in self.stages]}


def crash_point(stage: str, count: int) -> None:
    """SIGKILL this process at a named point when the crash-safety test asks for it.

    ``AUTOLABEL_CRASH_AT=explain:3`` kills the process after the third unit of explain work,
    exactly like a power cut: no cleanup, no exception handlers.
    """
    import os
    import signal

    target = os.environ.get(CRASH_ENV)
    if target and target == f"{stage}:{count}":
        os.kill(os.getpid(), signal.SIGKILL)


def guarded(stage: str, progress: Progress, deadline: float | None) -> Progress:
    """A progress callback that also enforces the deadline and the crash hook."""
    from autolabel.errors import BudgetExceeded

    calls = [0]

    def update(done: int, total: int) -> None:
        calls[0] += 1
        crash_point(stage, calls[0])
        progress(done, total)
        if deadline is not None and time.monotonic() > deadline:
            raise BudgetExceeded(f"deadline reached during {stage}; re-run to resume")

    return update


@contextlib.contextmanager
def run_lock(database: Database, wait: bool) -> Iterator[None]:
    """One batch per database: a second run exits with a clear message (or waits)."""
    from autolabel.db import _sqlite_path
    from autolabel.errors import AutolabelError

    if database.dialect == "postgresql":
        with _pg_run_lock(database, wait):
            yield
        return
    path = _sqlite_path(database.url)
    if path is None:
        yield
        return
    from filelock import FileLock, Timeout

    try:
        with FileLock(str(path) + ".run.lock", timeout=-1 if wait else 0):
            yield
    except Timeout:
        raise AutolabelError(f"another `autolabel run` is using {path}; wait for it, or pass "
                             "--wait to queue behind it") from None


RUN_LOCK_KEY = 7_315_202_612


@contextlib.contextmanager
def _pg_run_lock(database: Database, wait: bool) -> Iterator[None]:
    """Session-level advisory lock held on a dedicated connection for the whole run."""
    from sqlalchemy import text

    from autolabel.errors import AutolabelError

    with database.engine.connect() as conn:
        if wait:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": RUN_LOCK_KEY})
        elif not conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                              {"k": RUN_LOCK_KEY}).scalar():
            raise AutolabelError("another `autolabel run` is using this database; wait for it, "
                                 "or pass --wait to queue behind it")
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RUN_LOCK_KEY})
            conn.commit()


def start_run(database: Database, command: str, config: Config,
              argv: list[str]) -> int:
    """Insert the ``runs`` row (status running) with config and provenance."""
    import os
    import socket

    from autolabel import __version__
    from autolabel.db import Run

    with database.session() as session:
        run = Run(command=command, status="running", package_version=__version__,
                  config=config.model_dump(mode="json"), argv=argv, host=socket.gethostname(),
                  pid=os.getpid())
        session.add(run)
        session.flush()
        return run.id


def finish_run(database: Database, summary: RunSummary) -> None:
    """Record the run's final status, summary and error."""
    from autolabel.db import Run, utcnow

    with database.session() as session:
        run = session.get(Run, summary.run_id)
        if run is not None:
            run.status, run.summary, run.error = summary.status, summary.as_json(), summary.error
            run.finished_at = utcnow()


def default_report_dir(config: Config, sae_name: str) -> Path:
    """Where `autolabel run` writes its audit report unless ``audit.out_dir`` says otherwise."""
    import platformdirs

    if config.audit.out_dir:
        return Path(config.audit.out_dir)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in sae_name)
    return Path(platformdirs.user_data_dir("autolabel", appauthor=False)) / "reports" / safe


def run_batch(config: Config, database: Database, *, wait: bool = False,
              argv: list[str] | None = None, use_cache: bool = True,
              progress_factory: Callable[[str], Any] | None = None) -> RunSummary:
    """The nightly batch: every configured stage in order, each incremental.

    Budget or deadline exhaustion stops cleanly with status ``partial`` (exit 3) and the next
    run resumes; any other error marks the run ``failed`` (exit 1) with finished work kept.
    """
    with run_lock(database, wait):
        run_id = start_run(database, "run", config, list(argv or []))
        summary = _run_stages(config, database, run_id, use_cache, progress_factory)
        finish_run(database, summary)
    return summary


def _run_stages(config: Config, database: Database, run_id: int, use_cache: bool,
                progress_factory: Callable[[str], Any] | None) -> RunSummary:
    """Run stages until done, out of budget, or failed."""
    from autolabel.errors import AutolabelError, BudgetExceeded

    start = time.monotonic()
    deadline = start + config.run.deadline if config.run.deadline else None
    results: list[StageResult] = []
    state: dict[str, Any] = {"client": None, "report": None, "sae": None}
    status, error = "ok", None
    for stage in config.run.stages:
        t0 = time.monotonic()
        try:
            summary = _run_one(stage, config, database, run_id, use_cache, state,
                               _progress(stage, progress_factory, deadline))
            results.append(StageResult(stage, "ok", time.monotonic() - t0, summary))
        except BudgetExceeded as exc:
            status, error = "partial", str(exc)
            results.append(StageResult(stage, "partial", time.monotonic() - t0, {}))
            break
        except AutolabelError as exc:
            status, error = "failed", str(exc)
            results.append(StageResult(stage, "failed", time.monotonic() - t0, {}))
            break
    return RunSummary(run_id, status, results, state["report"], time.monotonic() - start,
                      error)


def _progress(stage: str, factory: Callable[[str], Any] | None,
              deadline: float | None) -> Progress:
    """The stage's progress callback (a UI bar when given), guarded by deadline and crash hook."""
    sink = factory(stage) if factory else _noop
    return guarded(stage, sink, deadline)


def scoring_needs_llm(config: Config, scorer_names: list[str]) -> bool:
    """Whether scoring calls an LLM (any non-simulation scorer, or a non-embedding simulator)."""
    return (any(n != "simulation" for n in scorer_names)
            or config.scoring.simulator != "embedding")


def _run_client(config: Config, database: Database, run_id: int, use_cache: bool,
                state: dict[str, Any]) -> Any:
    """One recorded LLM client per run, shared by explain and score.

    Sharing means the local model is loaded once, and ``--max-cost`` / ``--max-llm-tokens``
    bound the whole run rather than each stage separately.
    """
    if state.get("client") is None:
        state["client"] = _llm_client(config, database, run_id, use_cache)
    return state["client"]


def _run_one(stage: str, config: Config, database: Database, run_id: int, use_cache: bool,
             state: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Dispatch one stage; returns its JSON-ready summary."""
    sae = state.get("sae")
    if stage == "collect":
        done = collect_stage(config, database, progress=progress, sae_progress=progress)
        state["sae"] = done.sae
        return done.__dict__
    if stage == "explain":
        client = (_run_client(config, database, run_id, use_cache, state)
                  if "llm" in config.explain.explainers else None)
        ex = explain_stage(config, database, sae_name=sae, use_cache=use_cache, run_id=run_id,
                           client=client, progress=progress)
        return ex.__dict__
    if stage == "score":
        client = (_run_client(config, database, run_id, use_cache, state)
                  if scoring_needs_llm(config, list(config.scoring.scorers)) else None)
        return score_stage(config, database, sae_name=sae, use_cache=use_cache, run_id=run_id,
                           client=client, progress=progress).__dict__
    if stage == "embed":
        return _embed_stage(config, database, progress)
    return _audit_stage(config, database, state, progress)


def _embed_stage(config: Config, database: Database, progress: Progress) -> dict[str, Any]:
    """Index new explanations for semantic search."""
    from autolabel.embed import embed_missing, get_embedder

    embedder = get_embedder(config.search.embedding_model)
    count = embed_missing(database, embedder, progress=progress)
    return {"embedded": count, "model": embedder.name}


def _audit_stage(config: Config, database: Database, state: dict[str, Any],
                 progress: Progress) -> dict[str, Any]:
    """Bias audit of the collected features, with its report."""
    import sys

    from autolabel.audit import default_embedder, run_audit
    from autolabel.store import find_sae, select_features

    with database.session() as session:
        sae = find_sae(session, state.get("sae"))
        indices = [f.index for f in select_features(session, sae.id, config.collect.features,
                                                    sae.d_sae)]
        name = sae.name
    result = run_audit(config, database, pairs=config.audit.pairs,
                       out_dir=default_report_dir(config, name), features=indices,
                       argv=sys.argv, progress=progress,
                       embedder=default_embedder(config.search.embedding_model))
    state["report"] = str(result.html_path)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in result.__dict__.items()}
