"""Text sources, deterministic train/test splits and fixed-size token windows.

Everything downstream (SAE training, example collection, scoring) reads text through this package
so that three properties hold everywhere:

* **Stable ids.** Every document has an id that is the same across runs and machines, so a split
  assignment or a stored example can be traced back to its text.
* **Leak-free splits.** A document's split comes from a seeded sha256 of its id (never Python's
  salted ``hash()``), and every window of a document inherits it, so no document feeds both the
  examples an explanation is written from and the examples it is scored on.
* **Streaming.** Documents are read lazily and tokenised one at a time; the corpus of token ids is
  never held in memory.

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
    NEWS_FILES,
    WIKI_FILE,
    Document,
    corpus_fingerprint,
    iter_documents,
)
from autolabel.corpus.wiki import strip_wiki_markup
from autolabel.corpus.windows import (
    MIN_CHUNK_TOKENS,
    Window,
    WindowBatch,
    assign_split,
    batch_windows,
    iter_windows,
)

__all__ = [
    "ACCEPTED_FORMS",
    "BUILTIN_FORMAT_VERSION",
    "BUILTIN_SOURCES",
    "LOCAL_SUFFIXES",
    "MIN_CHUNK_TOKENS",
    "NEWS_FILES",
    "WIKI_FILE",
    "Document",
    "Window",
    "WindowBatch",
    "assign_split",
    "batch_windows",
    "corpus_fingerprint",
    "iter_documents",
    "iter_windows",
    "strip_wiki_markup",
]
