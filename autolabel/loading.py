"""From config to loaded things: the subject model, the SAE, corpus token batches, and the run
context that loads each of them (and the LLM client and embedder) at most once, and only when a
stage really needs it.

Loading is where a run spends its fixed cost (the model ~5 s, sae-lens ~10 s to import, the
embedding model ~15 s), so stages first decide from cheap identities (file hashes, revisions
read from disk) whether they have any work, and touch :class:`RunContext` attributes only then.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from autolabel.config import Config
from autolabel.corpus import (
    CorpusCut,
    CorpusPlan,
    Window,
    WindowSpec,
    batch_windows,
    budgeted_windows,
    corpus_fingerprint,
    plan_corpus,
    shard_windows,
)
from autolabel.embed import Embedder, get_embedder
from autolabel.examples import TokenDecoder
from autolabel.llm.factory import recorded_client
from autolabel.saes import (
    REPORT_FILE,
    LoadedSAE,
    TrainReport,
    check_fits,
    default_sae_dir,
    load_sae,
    local_sae_hash,
    local_sae_width,
    train_sae,
)
from autolabel.store.collections import CollectionSpec
from autolabel.subject import SubjectModel, known_revision, load_subject, load_tokenizer

if TYPE_CHECKING:
    from torch import Tensor

    from autolabel.db import Database
    from autolabel.llm import LLMClient

Progress = Callable[[int, int], None]  # (done, total)


def no_progress(done: int, total: int) -> None:
    """Progress sink used when the caller shows none."""


def load_subject_for(config: Config) -> SubjectModel:
    """The subject model named by the config, cut after the configured layer."""
    from transformers.utils import logging as hf_logging  # heavy; only when a model loads

    hf_logging.disable_progress_bar()  # our own progress bars are the ones that matter
    s = config.subject
    return load_subject(s.model, s.layer, device=s.device, dtype=s.dtype)


def window_spec(config: Config) -> WindowSpec:
    """How the configured corpus becomes windows (source, window, seed, split fractions)."""
    c = config.corpus
    return WindowSpec(c.source, c.window, c.seed, c.test_fraction, c.validation_fraction,
                      c.text_field)


def corpus_windows(config: Config, tokenizer: Any, max_tokens: int | None) -> Iterator[Window]:
    """The configured corpus's windows, in order, cut at ``max_tokens`` (each document's
    train / validation / test split decided by its hash)."""
    for _ordinal, window in budgeted_windows(window_spec(config), tokenizer, max_tokens):
        yield window


def batches_of(config: Config, tokenizer: Any, windows: Iterable[Window]) -> Iterator[Any]:
    """Windows in padded batches of ``collect.batch_size``, every batch padded to the full
    window width: a window's activations then do not depend on the windows beside it (so
    results do not depend on batch size, sharding or executor; see ``corpus.batch_windows``)."""
    pad = tokenizer.pad_token_id
    return batch_windows(windows, config.collect.batch_size, 0 if pad is None else int(pad),
                         width=config.corpus.window)


def token_batches(config: Config, tokenizer: Any, max_tokens: int) -> Iterator[Any]:
    """Padded batches of the corpus's windows, cut at ``max_tokens``."""
    return batches_of(config, tokenizer, corpus_windows(config, tokenizer, max_tokens))


def corpus_plan(config: Config, tokenizer: Any, max_tokens: int) -> CorpusPlan:
    """One budgeted read of the corpus: where it ends (so shards stop there) and the tally of
    documents, windows and tokens per split."""
    return plan_corpus(window_spec(config), tokenizer, max_tokens)


def shard_batches(config: Config, tokenizer: Any, cut: CorpusCut, shard: int,
                  n_shards: int) -> Iterator[Any]:
    """Padded batches of one shard's windows (documents by hash), up to ``cut``."""
    windows = shard_windows(window_spec(config), tokenizer, cut, shard, n_shards)
    return batches_of(config, tokenizer, windows)


def train_default_sae(config: Config, subject: SubjectModel, out_dir: Path,
                      progress: Progress = no_progress) -> TrainReport:
    """Train the configured small SAE on the configured corpus (held-out tokens for the report)."""
    s = config.sae
    batches = ((b.input_ids, b.attention_mask)
               for b in token_batches(config, subject.tokenizer,
                                      2 * (s.train_tokens + s.eval_tokens)))
    return train_sae(subject, batches, out_dir, d_sae=s.d_sae, k=s.k,
                     architecture=s.architecture, n_train_tokens=s.train_tokens,
                     n_eval_tokens=s.eval_tokens, seed=config.corpus.seed, progress=progress)


def default_sae_path(config: Config) -> Path:
    """Cache folder of the offline default SAE for the configured model and layer."""
    return default_sae_dir(config.subject.model, config.subject.layer, config.sae.d_sae,
                           config.sae.k)


def resolve_sae(config: Config, subject: SubjectModel,
                progress: Progress = no_progress) -> tuple[LoadedSAE, dict[str, Any] | None]:
    """Load the configured SAE; the offline default is trained once (under a lock) and cached."""
    spec, metrics = config.sae.sae, None
    if spec == "default":
        out = default_sae_path(config)
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


@dataclass(frozen=True)
class SAEIdentity:
    """What identifies an SAE in the database, known without loading it."""

    content_hash: str
    d_sae: int


def known_sae(config: Config) -> SAEIdentity | None:
    """The configured SAE's hash and width when they can be read from disk (a trained default
    or a local directory); None for hub SAEs and a default that is not trained yet."""
    spec = config.sae.sae
    path = default_sae_path(config) if spec == "default" else Path(spec).expanduser()
    if not (path / "cfg.json").is_file():
        return None
    return SAEIdentity(local_sae_hash(path), local_sae_width(path))


def collection_spec(config: Config, model_id: str, revision: str | None,
                    sae_hash: str) -> CollectionSpec:
    """The identity of a collection: model, SAE hash, corpus, window, seed, layer, settings."""
    c, k = config.corpus, config.collect
    settings = k.model_dump(exclude={"features", "tokens", "batch_size"})
    settings["validation_fraction"] = c.validation_fraction  # three splits by document
    return CollectionSpec(
        model_id=model_id, model_revision=revision, sae_hash=sae_hash,
        layer=config.subject.layer, corpus=c.source,
        corpus_fingerprint=corpus_fingerprint(c.source, c.text_field), window=c.window,
        seed=c.seed, test_fraction=c.test_fraction, n_tokens=k.tokens, settings=settings,
    )


def known_collection_spec(config: Config) -> CollectionSpec | None:
    """The collection spec from cheap identities, or None when only loading can tell."""
    revision, sae = known_revision(config.subject.model), known_sae(config)
    if revision is None or sae is None:
        return None
    return collection_spec(config, config.subject.model, revision, sae.content_hash)


def activations_of(subject: SubjectModel, sae: LoadedSAE, input_ids: Tensor,
                   attention_mask: Tensor) -> Tensor:
    """SAE latents ``[B, T, d_sae]`` for a batch (used by audits and benchmarks)."""
    resid = subject.resid(input_ids, attention_mask)
    flat = sae.encode(resid.reshape(-1, resid.shape[-1]))
    return flat.reshape(*resid.shape[:2], -1)


def _recorded_client(ctx: RunContext) -> LLMClient:
    """The configured LLM client, recorded in ``llm_calls`` (cache + run-wide budget); built
    without loading the local model, which loads on the first request the cache cannot answer."""
    return recorded_client(ctx.config, ctx.database, run_id=ctx.run_id,
                           use_cache=ctx.use_cache)


class RunContext:
    """Everything heavy a run may need, each loaded at most once and only on first use.

    One context serves a whole ``autolabel run`` (or one worker), so explain and score share
    one LLM client (and its budget) and the subject model is loaded once. ``loaded`` names
    what was actually loaded, which is how a run with nothing to do proves it loaded nothing:
    the LLM client and the embedder are cheap to create and count only once their model is
    in memory (a server-backed client never loads one).
    """

    def __init__(self, config: Config, database: Database, *, run_id: int | None = None,
                 use_cache: bool = True, sae_progress: Progress = no_progress,
                 llm_factory: Callable[[RunContext], LLMClient] | None = None) -> None:
        self.config, self.database = config, database
        self.run_id, self.use_cache = run_id, use_cache
        self.sae_progress = sae_progress
        self._loaded: list[str] = []
        self._llm_factory = llm_factory
        self._tokenizers: dict[str, Any] = {}
        self._decoders: dict[str, TokenDecoder] = {}

    @classmethod
    def from_objects(cls, config: Config, database: Database, *, subject: Any = None,
                     sae: Any = None, sae_metrics: dict[str, Any] | None = None,
                     embedder: Any = None, **kwargs: Any) -> RunContext:
        """A context around objects already in memory (tests, notebooks, benchmarks).

        Given objects are used as if loaded (they are not listed in ``loaded``); the others
        still load lazily from ``config``. Duck-typed objects (a fake SAE) are fine.
        """
        ctx = cls(config, database, **kwargs)
        given = {"subject": subject, "_sae_and_metrics": None if sae is None else
                 (sae, sae_metrics), "embedder": embedder}
        ctx.__dict__.update({k: v for k, v in given.items() if v is not None})
        return ctx

    @property
    def loaded(self) -> list[str]:
        """What this context has loaded so far: subject, sae, tokenizer:ID, llm, embedder."""
        names = list(self._loaded)
        llm = self.__dict__.get("llm")
        backend = llm.local_backend() if llm is not None else None
        if backend is not None and backend.loaded:
            names.append("llm")
        embedder = self.__dict__.get("embedder")
        if embedder is not None and getattr(embedder, "loaded", False):
            names.append("embedder")
        return names

    def in_memory(self, name: str) -> bool:
        """Whether ``name`` (subject, sae, llm, embedder) is available without loading it, so
        a stage may read its identity for free (e.g. an SAE's hash) before deciding to work."""
        return ("_sae_and_metrics" if name == "sae" else name) in self.__dict__

    @cached_property
    def subject(self) -> SubjectModel:
        """The subject model, cut after the configured layer."""
        self._loaded.append("subject")
        return load_subject_for(self.config)

    @cached_property
    def _sae_and_metrics(self) -> tuple[LoadedSAE, dict[str, Any] | None]:
        self._loaded.append("sae")
        return resolve_sae(self.config, self.subject, self.sae_progress)

    @property
    def sae(self) -> LoadedSAE:
        """The configured SAE (the offline default is trained on first use)."""
        return self._sae_and_metrics[0]

    @property
    def sae_metrics(self) -> dict[str, Any] | None:
        """The default SAE's training report, if it has one."""
        return self._sae_and_metrics[1]

    def tokenizer(self, model_id: str | None = None) -> Any:
        """The tokenizer of ``model_id`` (default: the configured model), loaded once."""
        model_id = model_id or self.config.subject.model
        if model_id not in self._tokenizers:
            loaded: SubjectModel | None = self.__dict__.get("subject")
            if loaded is not None and loaded.model_id == model_id:
                self._tokenizers[model_id] = loaded.tokenizer
            else:
                self._tokenizers[model_id] = load_tokenizer(model_id)
            self._loaded.append(f"tokenizer:{model_id}")
        return self._tokenizers[model_id]

    def decoder(self, model_id: str | None = None) -> TokenDecoder:
        """A memoised id -> text decoder for ``model_id``'s tokenizer."""
        key = model_id or self.config.subject.model
        if key not in self._decoders:
            self._decoders[key] = TokenDecoder(self.tokenizer(key))
        return self._decoders[key]

    @cached_property
    def llm(self) -> LLMClient:
        """The run's one recorded LLM client (cache, call log and budget shared by stages); its
        local model, if any, loads on the first request the call cache cannot answer."""
        factory = self._llm_factory or _recorded_client
        return factory(self)

    @cached_property
    def embedder(self) -> Embedder:
        """The search embedder; its model loads on the first text it embeds."""
        return get_embedder(self.config.search.embedding_model)
