"""Text sources, deterministic train/test splits and fixed-size token windows.

Everything downstream (SAE training, example collection, scoring) reads text through this package
so that three properties hold everywhere:

* **Stable ids.** Every document has an id that is the same across runs and machines, so a split
  assignment or a stored example can be traced back to its text.
* **Leak-free splits.** A document's split (train / validation / test) comes from a seeded
  sha256 of its id (never Python's salted ``hash()``), and every window of a document inherits
  it, so no document feeds more than one of explaining, choosing among candidate explanations
  and scoring the chosen one.
* **Streaming.** Documents are read lazily, long ones in bounded pieces, and tokenised one piece
  at a time; neither the corpus of token ids nor a whole hostile line is ever held in memory.
* **Shards.** Other bits of the same hash assign each document to a shard; shards read the corpus
  apart and together yield exactly the windows of one budgeted read.

Modules: :mod:`~autolabel.corpus.sources` (documents of every source kind and their
fingerprints), :mod:`~autolabel.corpus.wiki` (Wikipedia markup stripping),
:mod:`~autolabel.corpus.windows` (splits, windows, batches). The public names are re-exported here.
"""

from __future__ import annotations

from autolabel.corpus.sources import (
    ACCEPTED_FORMS,
    BUILTIN_FORMAT_VERSION,
    BUILTIN_SOURCES,
    LOCAL_SUFFIXES,
    MAX_PIECE_CHARS,
    NEWS_FILES,
    WIKI_FILE,
    Document,
    corpus_fingerprint,
    iter_documents,
    split_document,
)
from autolabel.corpus.wiki import strip_wiki_markup
from autolabel.corpus.windows import (
    MIN_CHUNK_TOKENS,
    SPLIT_NAMES,
    CorpusCut,
    CorpusPlan,
    SplitTally,
    Window,
    WindowBatch,
    WindowSpec,
    assign_split,
    batch_windows,
    budgeted_windows,
    document_shard,
    iter_windows,
    plan_corpus,
    shard_windows,
)

__all__ = [
    "ACCEPTED_FORMS",
    "BUILTIN_FORMAT_VERSION",
    "BUILTIN_SOURCES",
    "LOCAL_SUFFIXES",
    "MAX_PIECE_CHARS",
    "MIN_CHUNK_TOKENS",
    "NEWS_FILES",
    "SPLIT_NAMES",
    "WIKI_FILE",
    "CorpusCut",
    "CorpusPlan",
    "Document",
    "SplitTally",
    "Window",
    "WindowBatch",
    "WindowSpec",
    "assign_split",
    "batch_windows",
    "budgeted_windows",
    "corpus_fingerprint",
    "document_shard",
    "iter_documents",
    "iter_windows",
    "plan_corpus",
    "shard_windows",
    "split_document",
    "strip_wiki_markup",
]
