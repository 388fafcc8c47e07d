"""The explain stage: candidates from each configured explainer, from train examples only.

What is missing is decided from the stored candidates and the examples' activations, before any
text is decoded or any model is loaded; a finished stage therefore costs a few queries.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autolabel.config import Config
from autolabel.corpus import iter_windows
from autolabel.db import Database, SAERecord
from autolabel.errors import NotFoundError
from autolabel.examples import Example, TextExample, TokenDecoder
from autolabel.explain import LLMExplainer, TokenStatsExplainer
from autolabel.llm import LLMClient
from autolabel.loading import Progress, RunContext, _noop
from autolabel.store import (
    existing_explanations,
    feature_model_id,
    find_sae,
    load_examples,
    select_features,
    store_candidates,
)

Examples = dict[int, list[Example]]  # feature id -> its train examples


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


def explain_stage(config: Config, database: Database, *, sae_name: str | None = None,
                  features: str | None = None, use_cache: bool = True, run_id: int | None = None,
                  client: LLMClient | None = None, progress: Progress = _noop,
                  ctx: RunContext | None = None) -> ExplainSummary:
    """Explain every selected feature with each configured explainer (train split only)."""
    start = time.perf_counter()
    ctx = ctx or RunContext(config, database, run_id=run_id, use_cache=use_cache)
    sae, ids, model_id = feature_context(database, sae_name, features)
    examples = {fid: train_examples(database, fid) for fid in ids}
    statuses: dict[str, int] = {}
    created = skipped = 0
    llm_totals: dict[str, float] = {}
    for name in config.explain.explainers:
        if name == "tokens":
            c, s = _explain_tokens(config, database, examples, lambda: ctx.decoder(model_id),
                                   ctx.run_id, statuses)
        else:
            client = client or ctx.llm
            c, s = _explain_llm(config, database, examples, ctx.decoder, model_id, client,
                                ctx.run_id, statuses, progress)
            llm_totals = dict(getattr(client, "totals", {}))
        created, skipped = created + c, skipped + s
    return ExplainSummary(sae.name, len(ids), created, skipped, statuses, llm_totals,
                          time.perf_counter() - start)


def feature_context(database: Database, sae_name: str | None,
                    spec: str | None) -> tuple[SAERecord, list[int], str | None]:
    """The SAE row, the ids of its selected collected features, and their subject model id."""
    with database.session() as session:
        sae = find_sae(session, sae_name)
        rows = select_features(session, sae.id, spec, sae.d_sae)
        model_id = feature_model_id(session, rows[0]) if rows else None
    if not rows:
        raise NotFoundError(f"SAE {sae.name!r} has no collected features"
                            f"{' in ' + spec if spec else ''}; run `autolabel collect` first")
    return sae, [f.id for f in rows], model_id


def train_examples(database: Database, feature_id: int) -> list[Example]:
    """A feature's train-split examples (top + quantile): the only ones explainers see."""
    with database.session() as session:
        return load_examples(session, feature_id, split="train", kinds=("top", "quantile"))


def as_text(examples: list[Example], decode: TokenDecoder) -> list[TextExample]:
    """Examples decoded to token strings for an explainer."""
    return [e.to_text(decode) for e in examples]


def corpus_background(config: Config, decode: TokenDecoder,
                      max_tokens: int = 200_000) -> dict[str, float]:
    """Token frequencies of *train* documents of the corpus (TokenStats' background)."""
    c = config.corpus
    counts: Counter[int] = Counter()
    for window in iter_windows(c.source, decode.tokenizer, window=c.window, seed=c.seed,
                               test_fraction=c.test_fraction, text_field=c.text_field,
                               max_tokens=max_tokens):
        if window.split == "train":
            counts.update(window.token_ids[1:])
    ids = list(counts)
    return {tok: float(counts[i]) for i, tok in zip(ids, decode(ids), strict=True)}


def _explain_tokens(config: Config, database: Database, examples: Examples,
                    decoder: Callable[[], TokenDecoder], run_id: int | None,
                    statuses: dict[str, int]) -> tuple[int, int]:
    """TokenStats baseline for features that lack it."""
    explainer = TokenStatsExplainer()
    todo = _missing(database, examples, "tokens", "", explainer.prompt_hash, 1)
    if not todo:
        return 0, len(examples)
    decode = decoder()
    background = corpus_background(config, decode)
    results = {fid: [explainer.explain(as_text(examples[fid], decode), background)]
               for fid in todo}
    _store(database, results, run_id, statuses)
    return len(todo), len(examples) - len(todo)


def _explain_llm(config: Config, database: Database, examples: Examples,
                 decoder: Callable[[str | None], TokenDecoder], model_id: str | None,
                 client: LLMClient, run_id: int | None, statuses: dict[str, int],
                 progress: Progress) -> tuple[int, int]:
    """LLM candidates (best-of-k) in chunks; each chunk is stored before the next starts."""
    k = config.explain.k
    explainer = LLMExplainer(client, k=k, seed=config.scoring.seed,
                             temperature=config.llm.temperature)
    todo = _missing(database, examples, "llm", client.model, explainer.prompt_hash, k)
    chunk = max(1, config.collect.batch_size)
    for done in range(0, len(todo), chunk):
        ids = todo[done:done + chunk]
        decode = decoder(model_id)
        results = explainer.explain_many([as_text(examples[f], decode) for f in ids])
        _store(database, dict(zip(ids, results, strict=True)), run_id, statuses)
        progress(done + len(ids), len(todo))
    return len(todo), len(examples) - len(todo)


def _missing(database: Database, examples: Examples, explainer: str, llm_model: str,
             prompt_hash: str, k: int) -> list[int]:
    """Features lacking a final candidate.

    Status 'error' is retried (a server hiccup), except for features whose train examples never
    activate: their error is a fact about the data, and retrying it every night is noise.
    """
    with database.session() as session:
        have = existing_explanations(session, list(examples), explainer, llm_model, prompt_hash)

    def final(f: int, c: int) -> bool:
        row = have.get((f, c))
        return row is not None and (row.status != "error" or not _activates(examples[f]))

    return [f for f in examples if not all(final(f, c) for c in range(k))]


def _activates(examples: list[Example]) -> bool:
    """Whether any train example of a feature has a positive activation."""
    return any(float(e.activations.max(initial=0.0)) > 0 for e in examples)


def _store(database: Database, results: dict[int, list[Any]], run_id: int | None,
           statuses: dict[str, int]) -> None:
    """Store one chunk of candidates in one transaction and count their statuses."""
    with database.session() as session:
        counts = store_candidates(session, results, run_id)
    for status, n in counts.items():
        statuses[status] = statuses.get(status, 0) + n
