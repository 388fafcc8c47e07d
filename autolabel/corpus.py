"""Text sources, deterministic train/test splits and fixed-size token windows.

Everything downstream (SAE training, example collection, scoring) reads text through this module so
that three properties hold everywhere:

* **Stable ids.** Every document has an id that is the same across runs and machines, so a split
  assignment or a stored example can be traced back to its text.
* **Leak-free splits.** A document's split comes from a seeded sha256 of its id (never Python's
  salted ``hash()``), and every window of a document inherits it, so no document feeds both the
  examples an explanation is written from and the examples it is scored on.
* **Streaming.** Documents are read lazily and tokenised one at a time; the corpus of token ids is
  never held in memory.

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
"""

from __future__ import annotations

import bz2
import csv
import glob
import hashlib
import importlib.metadata
import json
import os
import re
import socket
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autolabel.errors import CorpusError, InputError

BUILTIN_SOURCES = ("wikipedia-sample", "python-docs")
LOCAL_SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet")
ACCEPTED_FORMS = (
    "'wikipedia-sample', 'python-docs', 'hf:NAME[:CONFIG][:SPLIT]', "
    "or a path/glob of .txt, .jsonl, .csv or .parquet files"
)
# A trailing chunk with fewer document tokens than this is dropped: a window of one or two tokens
# after BOS carries almost no context and its activations are dominated by position effects.
MIN_CHUNK_TOKENS = 4
# Bump when the built-in text extraction changes, so fingerprints (provenance) change with it.
BUILTIN_FORMAT_VERSION = 1

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS_FILES = ("lee_background.cor", "lee.cor")
# Sections after which a Wikipedia article is only citations and link lists.
_WIKI_TAIL_SECTIONS = re.compile(
    r"^==+\s*(See also|References|External links|Notes|Further reading|Bibliography|Sources|"
    r"Footnotes|Citations|Notes and references)\s*==+\s*$",
    re.MULTILINE | re.IGNORECASE,
)
_WIKI_TABLE = re.compile(r"\{\|(?:(?!\{\|)[\s\S])*?\|\}")
_WIKI_HEADING = re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.MULTILINE)
_WIKI_LIST_MARK = re.compile(r"^[*#:;]+\s*", re.MULTILINE)
_EMPTY_PARENS = re.compile(r"\(\s*[,;]?\s*\)")
_WIKI_GALLERY = re.compile(r"<gallery[^>]*>[\s\S]*?</gallery>", re.IGNORECASE)
_WIKI_FILE_LINE = re.compile(r"^(?:File|Image):.*$", re.MULTILINE | re.IGNORECASE)
_WIKI_IMAGE_OPTION = re.compile(r"\|(?:thumb|left|right|center|upright|\d+(?:x\d+)?px|alt=[^|\n]*)")


@dataclass(frozen=True)
class Document:
    """One unit of text with an id that is stable across runs and machines."""

    id: str
    text: str


@dataclass(frozen=True)
class Window:
    """A model input: BOS, then up to ``window - 1`` consecutive tokens of one document."""

    document_id: str
    split: str
    start: int
    token_ids: tuple[int, ...]


@dataclass
class WindowBatch:
    """Right-padded tensors for a list of windows, with the windows kept for provenance."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    windows: list[Window]


# --------------------------------------------------------------------------------------------
# Splits and windows
# --------------------------------------------------------------------------------------------


def assign_split(document_id: str, seed: int = 0, test_fraction: float = 0.5) -> str:
    """Return "train" or "test" for a document, from a seeded sha256 of its id.

    sha256 (not ``hash()``, which is salted per process) makes the split identical on every run
    and machine; the seed lets a user draw an independent split without renaming documents.
    """
    _check_fraction(test_fraction)
    digest = hashlib.sha256(f"{seed}\x00{document_id}".encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if unit < test_fraction else "train"


def iter_windows(
    spec: str,
    tokenizer: Any,
    window: int = 64,
    seed: int = 0,
    test_fraction: float = 0.5,
    text_field: str = "text",
    max_tokens: int | None = None,
) -> Iterator[Window]:
    """Stream BOS-prefixed windows of consecutive, non-overlapping document tokens.

    Each document is tokenised without special tokens and cut into chunks of ``window - 1``
    tokens; each chunk is prefixed with BOS so every window starts from the same clean state the
    model saw in training. Chunks shorter than ``MIN_CHUNK_TOKENS`` (the tail of a document, or a
    very short document) are dropped. ``max_tokens`` bounds the tokens fed to the model (BOS
    included): the last window is cut short so the total never exceeds it.
    """
    _check_window_args(window, test_fraction, max_tokens)
    bos = _bos_id(tokenizer)
    budget = max_tokens
    for doc in iter_documents(spec, text_field):
        split = assign_split(doc.id, seed, test_fraction)
        ids = _encode(tokenizer, doc.text)
        for start, chunk in _chunks(ids, window - 1):
            if budget is not None:
                chunk = chunk[: budget - 1]
                if len(chunk) < MIN_CHUNK_TOKENS:
                    return
                budget -= len(chunk) + 1
            yield Window(doc.id, split, start, (bos, *chunk))


def batch_windows(windows: Iterable[Window], batch_size: int, pad_id: int) -> Iterator[WindowBatch]:
    """Group windows into right-padded ``[B, T]`` long tensors with a matching attention mask.

    Right padding keeps every window's BOS at position 0 (so positions match training) regardless
    of which side the tokenizer itself pads on; the mask marks real tokens with 1.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1 (got {batch_size}); pass a positive size.")
    group: list[Window] = []
    for win in windows:
        group.append(win)
        if len(group) == batch_size:
            yield _pad(group, pad_id)
            group = []
    if group:
        yield _pad(group, pad_id)


def _pad(group: list[Window], pad_id: int) -> WindowBatch:
    """Build the padded tensors for one batch."""
    width = max(len(w.token_ids) for w in group)
    input_ids = torch.full((len(group), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(group), width), dtype=torch.long)
    for row, win in enumerate(group):
        input_ids[row, : len(win.token_ids)] = torch.tensor(win.token_ids, dtype=torch.long)
        mask[row, : len(win.token_ids)] = 1
    return WindowBatch(input_ids=input_ids, attention_mask=mask, windows=group)


def _chunks(ids: list[int], size: int) -> Iterator[tuple[int, list[int]]]:
    """Yield ``(start, chunk)`` for consecutive non-overlapping chunks, dropping short tails."""
    for start in range(0, len(ids), size):
        chunk = ids[start : start + size]
        if len(chunk) >= MIN_CHUNK_TOKENS:
            yield start, chunk


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Tokenise one document without special tokens (BOS is added per window instead).

    ``verbose=False`` silences the "longer than model max length" warning: we never feed the
    whole document to the model, only windows of it.
    """
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _bos_id(tokenizer: Any) -> int:
    """The tokenizer's BOS id; every window needs one."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        raise CorpusError(
            "The tokenizer has no BOS token; set tokenizer.bos_token (e.g. to its <bos> or "
            "end-of-text token) before building windows."
        )
    return int(bos)


def _check_fraction(test_fraction: float) -> None:
    """Reject fractions outside [0, 1]."""
    if not 0.0 <= test_fraction <= 1.0:
        raise InputError(f"test_fraction must be between 0 and 1 (got {test_fraction}).")


def _check_window_args(window: int, test_fraction: float, max_tokens: int | None) -> None:
    """Fail before reading any text when the window settings cannot work."""
    if window < MIN_CHUNK_TOKENS + 1:
        raise InputError(
            f"window must be at least {MIN_CHUNK_TOKENS + 1} tokens (got {window}); "
            "use a larger window such as 64 or 128."
        )
    _check_fraction(test_fraction)
    if max_tokens is not None and max_tokens < 1:
        raise InputError(f"max_tokens must be positive (got {max_tokens}); omit it for no limit.")


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
    while a file with no blank lines stays one document.
    """
    block: list[str] = []
    first = 0
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                if not block:
                    first = number
                block.append(line.rstrip("\n"))
            elif block:
                yield Document(f"{prefix}:{first}", "\n".join(block).strip())
                block = []
    if block:
        yield Document(f"{prefix}:{first}", "\n".join(block).strip())


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
                yield Document(f"{prefix}:{number}", text)


def _iter_csv(path: Path, prefix: str, text_field: str) -> Iterator[Document]:
    """One document per CSV row (header required); the id carries the row index (0-based)."""
    csv.field_size_limit(2**31 - 1)  # long documents exceed the 128 KiB default; C long-safe
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        _require_field(list(reader.fieldnames or []), text_field, str(path))
        for row_index, row in enumerate(reader):
            text = row.get(text_field) or ""
            if text.strip():
                yield Document(f"{prefix}:{row_index}", text)


def _iter_parquet(path: Path, prefix: str, text_field: str) -> Iterator[Document]:
    """One document per row, read in record batches; the id carries the row index (0-based)."""
    import pyarrow.parquet as pq

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
                yield Document(f"{prefix}:{row_index}", value)
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
        import datasets
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
            yield Document(f"{prefix}:{index}", text)


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
        from pydoc_data.topics import topics
    except ImportError:
        raise CorpusError(
            "This Python has no pydoc_data (some distributions strip it); install the full "
            "standard library or use 'wikipedia-sample' or a local file."
        ) from None
    for topic in sorted(topics):
        text = topics[topic].strip()
        if text:
            yield Document(f"python-docs:{topic}", text)


def _gensim_test_data() -> Path:
    """The folder where gensim's wheel installs its test data (we read it in place)."""
    try:
        import gensim
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
    from gensim.corpora.wikicorpus import extract_pages

    with bz2.open(path, "rb") as handle:
        for _title, raw, page_id in extract_pages(handle, filter_namespaces=("0",)):
            if not raw or raw.lstrip().lower().startswith("#redirect"):
                continue
            text = strip_wiki_markup(raw)
            if text:
                yield Document(f"wikipedia-sample:enwiki:{page_id}", text)


def _iter_news(path: Path) -> Iterator[Document]:
    """One story per line; ``lee.cor`` is Latin-1 (a '£'), so fall back from UTF-8."""
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        content = raw.decode("latin-1")
    for number, line in enumerate(content.splitlines(), start=1):
        if line.strip():
            yield Document(f"wikipedia-sample:{path.stem}:{number}", line.strip())


def strip_wiki_markup(raw: str) -> str:
    """Turn wikitext into plain prose paragraphs.

    Tables, galleries and the trailing citation/link sections are dropped (not prose);
    gensim's ``filter_wiki`` removes templates, refs, files, categories and keeps link text; the
    rest (bold/italic quotes, heading and list markers, empty parentheses left by removed
    templates, runs of blank lines) is tidied here.
    """
    from gensim.corpora.wikicorpus import filter_wiki

    tail = _WIKI_TAIL_SECTIONS.search(raw)
    text = raw[: tail.start()] if tail else raw
    text = _remove_tables(_WIKI_GALLERY.sub("", text))
    text = filter_wiki(text)
    text = _WIKI_IMAGE_OPTION.sub("", _WIKI_FILE_LINE.sub("", text))
    text = text.replace("'''", "").replace("''", "")
    text = _WIKI_HEADING.sub(r"\1", text)
    text = _WIKI_LIST_MARK.sub("", text)
    text = _EMPTY_PARENS.sub("", text)
    for leftover in ("{{", "}}", "[[", "]]", "{|", "|}"):
        text = text.replace(leftover, "")
    return _tidy_whitespace(text)


def _remove_tables(text: str) -> str:
    """Remove ``{| ... |}`` tables, innermost first, since tables nest."""
    while True:
        new = _WIKI_TABLE.sub("", text)
        if new == text:
            return new
        text = new


def _tidy_whitespace(text: str) -> str:
    """Strip each line, collapse inner space runs and keep at most one blank line in a row."""
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines()]
    lines = [re.sub(r" ([,.;:])", r"\1", line) for line in lines]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()
