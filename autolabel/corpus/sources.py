"""Documents from every kind of source, each with an id that is stable across runs and machines.

Sources (the ``spec`` string):

* ``wikipedia-sample`` - natural English read from where gensim installs its test data: the
  Wikipedia excerpt ``enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``
  (main-namespace articles, redirects dropped, wiki markup stripped, reference sections cut) and
  the Lee news corpus ``lee_background.cor`` + ``lee.cor`` (one news story per line).
* ``python-docs`` - the stdlib's ``pydoc_data.topics`` (one document per help topic).
* ``hf:NAME[:CONFIG][:SPLIT]`` - a streamed Hugging Face dataset (split defaults to ``train``).
* a local ``.txt`` / ``.jsonl`` / ``.csv`` / ``.parquet`` file, or a glob over such files.
  A ``.txt`` file yields one document per blank-line-separated paragraph block (a file without
  blank lines is one document); the other formats yield one document per record, text taken from
  ``text_field``.

Documents are read lazily, one at a time; ``corpus_fingerprint`` names a source's content for
provenance. A long document arrives as several consecutive pieces with the same id, each at most
``MAX_PIECE_CHARS`` characters and cut where whitespace begins, so that neither reading nor
tokenising ever holds a whole hostile line (one 21.5 MB line peaked at 2.9 GB RSS when it was
tokenised whole): peak memory does not grow with line length. Consumers that need whole
documents (windows) join consecutive pieces of one id.
"""

from __future__ import annotations

import bz2
import csv
import glob
import hashlib
import importlib.metadata
import json
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autolabel.corpus.wiki import strip_wiki_markup
from autolabel.errors import CorpusError

BUILTIN_SOURCES = ("wikipedia-sample", "python-docs")
LOCAL_SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet")
ACCEPTED_FORMS = (
    "'wikipedia-sample', 'python-docs', 'hf:NAME[:CONFIG][:SPLIT]', "
    "or a path/glob of .txt, .jsonl, .csv or .parquet files"
)
# Bump when the built-in text extraction changes, so fingerprints (provenance) change with it.
# v2: long documents are read and tokenised in pieces of at most MAX_PIECE_CHARS characters.
BUILTIN_FORMAT_VERSION = 2
MAX_PIECE_CHARS = 1 << 16

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS_FILES = ("lee_background.cor", "lee.cor")


@dataclass(frozen=True)
class Document:
    """One unit of text with an id that is stable across runs and machines (or one piece of a
    long one: consecutive pieces share the id)."""

    id: str
    text: str


class _Pieces:
    """Accumulates one document's text and hands it out in pieces of bounded size.

    Cuts fall where a whitespace run begins (searched in the piece's second half), so the next
    piece starts with the space a tokenizer would have seen; text without any whitespace is cut
    hard at the limit. ``strip`` trims the document's ends, as the .txt reader always did.
    """

    def __init__(self, document_id: str, strip: bool) -> None:
        self.id, self.strip = document_id, strip
        self.parts: list[str] = []
        self.size = 0
        self.started = False

    def add(self, text: str) -> Iterator[Document]:
        self.parts.append(text)
        self.size += len(text)
        while self.size > MAX_PIECE_CHARS:
            joined = "".join(self.parts)
            cut = _cut_point(joined, MAX_PIECE_CHARS)
            self.parts, self.size = [joined[cut:]], len(joined) - cut
            yield from self._emit(joined[:cut])

    def flush(self) -> Iterator[Document]:
        text = "".join(self.parts)
        self.parts, self.size = [], 0
        yield from self._emit(text.rstrip() if self.strip else text)

    def _emit(self, text: str) -> Iterator[Document]:
        if self.strip and not self.started:
            text = text.lstrip()
        if text.strip():
            self.started = True
            yield Document(self.id, text)


def _cut_point(text: str, limit: int) -> int:
    """Where to end a piece of ``text`` (longer than ``limit``): before the last whitespace run
    in the second half of the limit, else at the limit."""
    for cut in range(limit, limit // 2, -1):
        if text[cut].isspace() and not text[cut - 1].isspace():
            return cut
    return limit


def split_document(document_id: str, text: str) -> Iterator[Document]:
    """A record's text as one document, or as pieces of bounded size when it is long."""
    if len(text) <= MAX_PIECE_CHARS:
        yield Document(document_id, text)
        return
    pieces = _Pieces(document_id, strip=False)
    yield from pieces.add(text)
    yield from pieces.flush()



# --------------------------------------------------------------------------------------------
# Documents: dispatch
# --------------------------------------------------------------------------------------------


def iter_documents(spec: str, text_field: str = "text") -> Iterator[Document]:
    """Stream the non-empty documents of a source, in a stable order."""
    if spec == "wikipedia-sample":
        yield from _iter_wikipedia_sample()
    elif spec == "python-docs":
        yield from _iter_python_docs()
    elif spec.startswith("hf:"):
        yield from _iter_hf(spec, text_field)
    else:
        for path, doc_prefix in _resolve_local(spec):
            yield from _iter_local_file(path, doc_prefix, text_field)


def corpus_fingerprint(spec: str, text_field: str = "text") -> str:
    """A short id of the source's content, stored with results for provenance.

    Built-ins are pinned by the version of the package that ships the text (plus our extraction
    format); local files by a sha256 of their bytes; a hub dataset by its spec, since hashing a
    remote stream would mean downloading it.
    """
    if spec == "wikipedia-sample":
        version = importlib.metadata.version("gensim")
        return f"wikipedia-sample@gensim-{version}/v{BUILTIN_FORMAT_VERSION}"
    if spec == "python-docs":
        version = ".".join(str(part) for part in sys.version_info[:3])
        return f"python-docs@python-{version}/v{BUILTIN_FORMAT_VERSION}"
    if spec.startswith("hf:"):
        return spec if text_field == "text" else f"{spec}[{text_field}]"
    return _hash_local_files(spec, text_field)


def _hash_local_files(spec: str, text_field: str) -> str:
    """sha256 over each file's relative name and bytes (and the text field), streamed."""
    digest = hashlib.sha256(text_field.encode())
    for path, doc_prefix in _resolve_local(spec):
        digest.update(b"\x00" + doc_prefix.encode() + b"\x00")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Local files
# --------------------------------------------------------------------------------------------


def _resolve_local(spec: str) -> list[tuple[Path, str]]:
    """Expand a path or glob into ``(path, id prefix)`` pairs, sorted for a stable order.

    The id prefix is the path relative to the glob's fixed root (the file name for a plain path),
    so ids do not depend on where the data lives on a given machine.
    """
    if glob.has_magic(spec):
        matches = sorted(glob.glob(spec, recursive=True))
        paths = [Path(m) for m in matches if Path(m).suffix.lower() in LOCAL_SUFFIXES]
        if not paths:
            raise CorpusError(
                f"The glob {spec!r} matches no .txt/.jsonl/.csv/.parquet file; check the pattern "
                "(quote it in the shell so it is not expanded early)."
            )
        root = _glob_root(spec)
        return [
            (p, p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name) for p in paths
        ]
    path = Path(spec)
    if path.suffix.lower() not in LOCAL_SUFFIXES:
        raise CorpusError(f"Unknown corpus {spec!r}; use {ACCEPTED_FORMS}.")
    if not path.is_file():
        raise CorpusError(f"Corpus file {spec!r} does not exist; check the path or use a built-in.")
    return [(path, path.name)]


def _glob_root(spec: str) -> Path:
    """The leading directories of a glob that contain no wildcard."""
    parts: list[str] = []
    for part in Path(spec).parts[:-1]:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _iter_local_file(path: Path, prefix: str, text_field: str) -> Iterator[Document]:
    """Dispatch on the file suffix; decoding problems become one-line CorpusErrors."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            yield from _iter_txt(path, prefix)
        elif suffix == ".jsonl":
            yield from _iter_jsonl(path, prefix, text_field)
        elif suffix == ".csv":
            yield from _iter_csv(path, prefix, text_field)
        else:
            yield from _iter_parquet(path, prefix, text_field)
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); re-encode it as UTF-8."
        ) from None


def _iter_txt(path: Path, prefix: str) -> Iterator[Document]:
    """One document per blank-line-separated block; the id carries the block's first line (1-based).

    Paragraph blocks keep documents short enough that a split assigns text at a useful grain,
    while a file with no blank lines stays one document. Lines are read in parts of at most
    ``MAX_PIECE_CHARS`` characters and blocks leave in pieces, so memory stays bounded.
    """
    block: _Pieces | None = None
    number, at_line_start = 0, True
    with path.open(encoding="utf-8") as handle:
        for part in iter(lambda: handle.readline(MAX_PIECE_CHARS), ""):
            ends_line = part.endswith("\n")
            text = part[:-1] if ends_line else part
            if at_line_start:
                number += 1
            if at_line_start and ends_line and not text.strip():  # a blank line ends a block
                if block is not None:
                    yield from block.flush()
                block = None
            else:
                if block is None:
                    block = _Pieces(f"{prefix}:{number}", strip=True)
                elif at_line_start:
                    text = "\n" + text
                yield from block.add(text)
            at_line_start = ends_line
    if block is not None:
        yield from block.flush()


def _iter_jsonl(path: Path, prefix: str, text_field: str) -> Iterator[Document]:
    """One document per JSON object line; the id carries the line number (1-based)."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(
                    f"{path}:{number} is not valid JSON ({exc.msg}); fix or remove that line."
                ) from None
            if not isinstance(record, dict):
                raise CorpusError(f"{path}:{number} is not a JSON object; write one object a line.")
            text = _field(record, text_field, f"{path}:{number}")
            if text.strip():
                yield from split_document(f"{prefix}:{number}", text)


def _iter_csv(path: Path, prefix: str, text_field: str) -> Iterator[Document]:
    """One document per CSV row (header required); the id carries the row index (0-based)."""
    csv.field_size_limit(2**31 - 1)  # long documents exceed the 128 KiB default; C long-safe
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        _require_field(list(reader.fieldnames or []), text_field, str(path))
        for row_index, row in enumerate(reader):
            text = row.get(text_field) or ""
            if text.strip():
                yield from split_document(f"{prefix}:{row_index}", text)


def _iter_parquet(path: Path, prefix: str, text_field: str) -> Iterator[Document]:
    """One document per row, read in record batches; the id carries the row index (0-based)."""
    import pyarrow.parquet as pq  # heavy (~0.5 s import): only for .parquet corpora

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CorpusError(f"{path} is not a readable Parquet file ({reason}); check it.") from None
    _require_field(list(parquet.schema_arrow.names), text_field, str(path))
    row_index = 0
    for batch in parquet.iter_batches(columns=[text_field], batch_size=1024):
        for value in batch.column(0).to_pylist():
            if isinstance(value, str) and value.strip():
                yield from split_document(f"{prefix}:{row_index}", value)
            row_index += 1


def _field(record: dict[str, Any], text_field: str, where: str) -> str:
    """The text of one record, or a one-line error naming the fields that do exist."""
    _require_field(list(record), text_field, where)
    value = record[text_field]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CorpusError(f"{where}: field {text_field!r} is not a string; pick a text field.")
    return value


def _require_field(fields: list[str], text_field: str, where: str) -> None:
    """Raise a one-line error naming the available fields when the text field is missing."""
    if text_field not in fields:
        available = ", ".join(repr(f) for f in fields) or "none"
        raise CorpusError(
            f"{where} has no field {text_field!r} (available: {available}); "
            "pass --text-field with one of those."
        )


# --------------------------------------------------------------------------------------------
# Hugging Face datasets
# --------------------------------------------------------------------------------------------


def _parse_hf_spec(spec: str) -> tuple[str, str | None, str]:
    """Split ``hf:NAME[:CONFIG][:SPLIT]`` into name, config (None if empty) and split."""
    parts = spec[len("hf:") :].split(":")
    if not parts[0] or len(parts) > 3:
        raise CorpusError(
            f"Bad dataset spec {spec!r}; write hf:NAME[:CONFIG][:SPLIT], e.g. hf:wikitext:"
            "wikitext-103-raw-v1:train."
        )
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    return parts[0], config, split


def _iter_hf(spec: str, text_field: str) -> Iterator[Document]:
    """Stream a hub dataset; any failure to reach it becomes one actionable line."""
    name, config, split = _parse_hf_spec(spec)
    _check_hub_reachable(spec, name)
    try:
        import datasets  # heavy (seconds to import): only for hf: corpora
    except ImportError:
        raise CorpusError(
            "Reading hf: corpora needs the 'datasets' package; pip install datasets, "
            "or use a local file or a built-in corpus."
        ) from None
    try:
        stream = iter(datasets.load_dataset(name, config, split=split, streaming=True))
        first = next(stream, None)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorpusError(
            f"Cannot load dataset {spec!r}: the Hugging Face hub is unreachable or the dataset "
            f"does not exist ({reason[:200]}); use a local file or a built-in "
            f"({', '.join(BUILTIN_SOURCES)})."
        ) from None
    if first is None:
        return
    _require_field(list(first), text_field, spec)
    prefix = f"hf:{name}:{config or ''}:{split}"
    for index, record in enumerate(_chain_first(first, stream)):
        text = record.get(text_field)
        if isinstance(text, str) and text.strip():
            yield from split_document(f"{prefix}:{index}", text)


def _check_hub_reachable(spec: str, name: str) -> None:
    """Fail in seconds, not after ``datasets``' ~25 s of retries, when the hub cannot be reached.

    Skipped in offline mode (the user wants the local cache) and for local dataset folders.
    """
    offline = {os.environ.get(k, "").lower() for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    if offline & {"1", "true", "yes", "on"} or Path(name).exists():
        return
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    hostname, _, port = host.partition(":")
    try:
        socket.create_connection((hostname, int(port or 443)), timeout=5).close()
    except (OSError, ValueError):
        raise CorpusError(
            f"Cannot load dataset {spec!r}: the Hugging Face hub ({host}) is unreachable; use a "
            f"local file or a built-in ({', '.join(BUILTIN_SOURCES)}), or set HF_HUB_OFFLINE=1 "
            "to read a cached copy."
        ) from None


def _chain_first(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Put the already-read first record back in front of the stream."""
    yield first
    yield from rest


# --------------------------------------------------------------------------------------------
# Built-in sources
# --------------------------------------------------------------------------------------------


def _iter_python_docs() -> Iterator[Document]:
    """One document per stdlib help topic, in sorted topic order."""
    try:
        from pydoc_data.topics import topics  # absent from some stripped Pythons: checked here
    except ImportError:
        raise CorpusError(
            "This Python has no pydoc_data (some distributions strip it); install the full "
            "standard library or use 'wikipedia-sample' or a local file."
        ) from None
    for topic in sorted(topics):
        text = topics[topic].strip()
        if text:
            yield from split_document(f"python-docs:{topic}", text)


def _gensim_test_data() -> Path:
    """The folder where gensim's wheel installs its test data (we read it in place)."""
    try:
        import gensim  # heavy (~1 s import): only for the wikipedia-sample corpus
    except ImportError:
        raise CorpusError(
            "'wikipedia-sample' needs gensim; pip install 'gensim>=4.3', or use 'python-docs'."
        ) from None
    folder = Path(gensim.__file__).parent / "test" / "test_data"
    if not (folder / WIKI_FILE).is_file():
        raise CorpusError(
            f"gensim's test data ({WIKI_FILE}) is missing under {folder}; reinstall gensim "
            "from its wheel (pip install --force-reinstall gensim) or use 'python-docs'."
        )
    return folder


def _iter_wikipedia_sample() -> Iterator[Document]:
    """Wikipedia articles first, then the Lee news stories."""
    folder = _gensim_test_data()
    yield from _iter_wiki_articles(folder / WIKI_FILE)
    for name in NEWS_FILES:
        yield from _iter_news(folder / name)


def _iter_wiki_articles(path: Path) -> Iterator[Document]:
    """Main-namespace, non-redirect articles with markup stripped, id'd by page id."""
    from gensim.corpora.wikicorpus import extract_pages  # heavy: see _gensim_test_data

    with bz2.open(path, "rb") as handle:
        for _title, raw, page_id in extract_pages(handle, filter_namespaces=("0",)):
            if not raw or raw.lstrip().lower().startswith("#redirect"):
                continue
            text = strip_wiki_markup(raw)
            if text:
                yield from split_document(f"wikipedia-sample:enwiki:{page_id}", text)


def _iter_news(path: Path) -> Iterator[Document]:
    """One story per line; ``lee.cor`` is Latin-1 (a '£'), so fall back from UTF-8."""
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        content = raw.decode("latin-1")
    for number, line in enumerate(content.splitlines(), start=1):
        if line.strip():
            yield from split_document(f"wikipedia-sample:{path.stem}:{number}", line.strip())

