"""What a running server holds: the database (read-only), the warm embedder, tokenizers and
decoder matrices loaded once, and the parsing of search parameters shared by pages and API."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from jinja2 import Environment
from sqlalchemy import event

from autolabel.db import Database
from autolabel.embed import Embedder
from autolabel.errors import InputError
from autolabel.examples import TokenDecoder
from autolabel.search import MODES, SearchFilters, parse_verdicts
from autolabel.serve.neighbours import DecoderCache
from autolabel.serve.render import environment

log = logging.getLogger("autolabel.serve")

TokenizerLoader = Callable[[str], Any]  # model id -> tokenizer with batch_decode
MAX_LIMIT = 100


def make_read_only(database: Database) -> None:
    """Every new connection refuses writes: SQLite ``PRAGMA query_only``, PostgreSQL a
    read-only session. The server can then not change the database even through a bug."""
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        if database.dialect == "sqlite":
            cursor.execute("PRAGMA query_only = ON")
        else:  # SET is transactional in PostgreSQL: commit it, or a rollback undoes it
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            dbapi_conn.commit()
        cursor.close()

    event.listen(database.engine, "connect", on_connect)
    database.engine.dispose()  # connections opened before this are not reused


@dataclass
class ServeState:
    """Shared by every request of one server."""

    database: Database
    embedder: Embedder
    load_tokenizer: TokenizerLoader
    scorer: str = "simulation"
    env: Environment = field(default_factory=environment)
    decoders: DecoderCache = field(default_factory=DecoderCache)
    _decoders: dict[str, TokenDecoder | None] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def decoder(self, model_id: str | None) -> TokenDecoder | None:
        """The token decoder of a subject model, loaded once (None if it cannot load)."""
        if not model_id:
            return None
        with self._lock:
            if model_id not in self._decoders:
                try:
                    self._decoders[model_id] = TokenDecoder(self.load_tokenizer(model_id))
                except Exception as exc:  # any loader failure: show token ids instead
                    log.warning("cannot load the tokenizer of %s: %s", model_id, exc)
                    self._decoders[model_id] = None
            return self._decoders[model_id]


def feature_url(sae: str, index: int) -> str:
    """The feature page's path (the SAE name quoted: it may contain ``:`` or ``/``)."""
    return f"/feature/{quote(sae, safe='')}/{int(index)}"


def sae_url(sae: str) -> str:
    return f"/sae/{quote(sae, safe='')}"


def _blank(value: str | None) -> str | None:
    return value.strip() if value is not None and value.strip() else None


def _number(value: str | None, name: str, kind: type) -> Any:
    value = _blank(value)
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        raise InputError(f"{name} must be a number, got {value!r}") from None


@dataclass(frozen=True)
class SearchParams:
    """A search request from the query string (pages and API take the same parameters)."""

    q: str
    mode: str
    limit: int
    filters: SearchFilters

    @classmethod
    def parse(cls, params: dict[str, str], default_scorer: str) -> SearchParams:
        """Empty form fields mean "not set"; bad values are an InputError (HTTP 400)."""
        mode = _blank(params.get("mode")) or "hybrid"
        if mode not in MODES:
            raise InputError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        limit = _number(params.get("limit"), "limit", int) or 20
        if not 1 <= limit <= MAX_LIMIT:
            raise InputError(f"limit must be between 1 and {MAX_LIMIT}")
        filters = SearchFilters(
            sae=_blank(params.get("sae")), layer=_number(params.get("layer"), "layer", int),
            min_score=_number(params.get("min_score"), "min_score", float),
            scorer=_blank(params.get("scorer")) or default_scorer,
            explainer=_blank(params.get("explainer")), flagged=_blank(params.get("flagged")),
            verdicts=parse_verdicts(_blank(params.get("verdict"))))
        return cls(q=(params.get("q") or "").strip(), mode=mode, limit=limit, filters=filters)
