"""``autolabel serve``: a read-only local web app and JSON API over an autolabel database.

:func:`open_server` opens the database read-only (it must already be at the current schema:
the server never migrates), warms the embedding model and the vector index, and builds the
app; :func:`serve` runs it with uvicorn. Binding to anything but a loopback address needs
``allow_remote=True`` and prints a warning: there is no authentication.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from typing import Any

from sqlalchemy.orm import Session

from autolabel.db import Database, current_revision, head_revision
from autolabel.embed import Embedder, get_embedder
from autolabel.errors import DatabaseError, InputError
from autolabel.search import open_index
from autolabel.serve.app import CSP, create_app
from autolabel.serve.state import ServeState, TokenizerLoader, make_read_only
from autolabel.store.browse import collection_models
from autolabel.store.search import has_embeddings

__all__ = ["CSP", "ServeState", "check_host", "create_app", "is_loopback", "open_server",
           "serve"]

log = logging.getLogger("autolabel.serve")

REMOTE_WARNING = ("Warning: serving on {host}, reachable from other machines. There is no "
                  "authentication: anyone who can reach this port can read every label, score "
                  "and corpus context in the database.")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address) only reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def check_host(host: str, allow_remote: bool) -> str | None:
    """None for a loopback host; the warning to print for an allowed remote one; an
    InputError for a remote one without ``allow_remote``."""
    if is_loopback(host):
        return None
    if not allow_remote:
        raise InputError(f"refusing to serve on {host}: it is reachable from other machines "
                         "and there is no authentication; add --allow-remote if you mean it")
    return REMOTE_WARNING.format(host=host)


def _require_current_schema(database: Database) -> None:
    """The server is read-only, so it cannot migrate: an old database is a clear error."""
    have, want = current_revision(database.engine), head_revision()
    if have != want:
        raise DatabaseError(f"the database is at schema revision {have or '(none)'}, this "
                            f"autolabel needs {want}; run `autolabel db upgrade` first")


def open_server(database: Database, load_tokenizer: TokenizerLoader, *,
                embedder: Embedder | None = None, scorer: str = "simulation",
                embedding_model: str | None = None, warm: bool = True) -> Any:
    """The app over ``database`` (opened without migrating), made read-only, warm search.

    ``load_tokenizer`` turns a subject model id into a tokenizer (``autolabel.subject.
    load_tokenizer``; passed in so that this package never imports torch itself). It is
    called once per model, when a feature page first needs token strings.
    """
    _require_current_schema(database)
    make_read_only(database)
    emb = embedder or get_embedder(embedding_model or "all-MiniLM-L6-v2")
    state = ServeState(database=database, embedder=emb, load_tokenizer=load_tokenizer,
                       scorer=scorer)
    if warm:
        warm_up(state)
    return create_app(state)


def warm_up(state: ServeState) -> None:
    """Load the query embedder and open the vector index now, not on the first request; load
    the subject models' tokenizers in the background (seconds each, only pages need them)."""
    warm = getattr(state.embedder, "warm", None)
    if callable(warm):
        warm()
    with state.database.engine.connect() as conn:
        if has_embeddings(conn, state.embedder.name):
            open_index(state.database, state.embedder.name, conn)
    with Session(state.database.engine) as session:
        models = collection_models(session)
    threading.Thread(target=lambda: [state.decoder(m) for m in models], daemon=True,
                     name="autolabel-tokenizers").start()


def serve(app: Any, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn  # heavy-ish: only when actually serving

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
