"""The web app: pages (search, feature, SAE overview, audits) and the API router, with a strict
Content-Security-Policy on every response.

The policy allows nothing but the app's own stylesheet and inline SVG: no script at all, no
inline style, no frames, forms only to this origin. Together with autoescaped templates a
corpus document containing ``<script>`` or ``<img onerror=…>`` can only ever show as text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session

from autolabel import __version__
from autolabel.errors import AutolabelError, InputError, NotFoundError
from autolabel.resources import web_dir
from autolabel.safety import visible
from autolabel.serve import pages
from autolabel.serve.api import router
from autolabel.serve.state import SearchParams, ServeState
from autolabel.store.browse import audit_view

CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")
# A stored audit report is a self-contained file with inline CSS: it gets its own policy that
# allows that style and nothing else (sandboxed: no script, no forms, no navigation).
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cache-Control": "no-store"}


def create_app(state: ServeState) -> FastAPI:
    """The ASGI app over one (read-only) database."""
    app = FastAPI(title="autolabel", version=__version__, docs_url=None, redoc_url=None,
                  description="Read-only browsing and search of SAE feature labels.")
    app.state.serve = state
    app.middleware("http")(_security_headers)
    app.add_exception_handler(AutolabelError, _error)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(web_dir() / "static")), name="static")
    _add_pages(app)
    return app


async def _security_headers(request: Request,
                            call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Every response carries the CSP and the usual hardening headers."""
    response = await call_next(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    for key, value in HEADERS.items():
        response.headers.setdefault(key, value)
    return response


def _status(exc: AutolabelError) -> int:
    return 404 if isinstance(exc, NotFoundError) else 400 if isinstance(exc, InputError) else 500


async def _error(request: Request, exc: Exception) -> Response:
    """One-line library errors: JSON under /api/, an error page elsewhere."""
    message = visible(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    status = _status(exc) if isinstance(exc, AutolabelError) else 500
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message, "type": type(exc).__name__}, status_code=status)
    state: ServeState = request.app.state.serve
    return HTMLResponse(pages.render(state, "error.html.j2", title="Error", message=message),
                        status_code=status)


def _add_pages(app: FastAPI) -> None:
    """The HTML pages (plain sync handlers: they run in the server's thread pool)."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def search_page(request: Request) -> str:
        state: ServeState = request.app.state.serve
        params = SearchParams.parse(dict(request.query_params), state.scorer)
        return pages.search_page(state, params, dict(request.query_params))

    @app.get("/feature/{sae:path}/{index}", response_class=HTMLResponse,
             include_in_schema=False)
    def feature_page(request: Request, sae: str, index: int) -> str:
        return pages.feature_page(request.app.state.serve, sae, index)

    @app.get("/sae/{sae:path}", response_class=HTMLResponse, include_in_schema=False)
    def sae_page(request: Request, sae: str) -> str:
        return pages.sae_page(request.app.state.serve, sae)

    @app.get("/audits", response_class=HTMLResponse, include_in_schema=False)
    def audits_page(request: Request) -> str:
        return pages.audits_page(request.app.state.serve)

    @app.get("/audits/{audit_id}", response_class=HTMLResponse, include_in_schema=False)
    def audit_page(request: Request, audit_id: int) -> str:
        return pages.audit_page(request.app.state.serve, audit_id)

    @app.get("/audits/{audit_id}/report", include_in_schema=False)
    def audit_report(request: Request, audit_id: int) -> Response:
        return _report_file(request.app.state.serve, audit_id)

    @app.get("/api", response_class=HTMLResponse, include_in_schema=False)
    def api_page(request: Request) -> str:
        return pages.api_page(request.app.state.serve, request.app.openapi())


def _report_file(state: ServeState, audit_id: int) -> Response:
    """The audit's stored HTML report, sandboxed by its own policy."""
    with Session(state.database.engine) as session:
        view = audit_view(session, audit_id)
    path = Path(view.audit.report_path) if view and view.audit.report_path else None
    if path is None or not path.is_file():
        raise NotFoundError(f"audit {audit_id} has no report file on this machine; re-run "
                            "`autolabel audit` to write one")
    headers: dict[str, Any] = {"Content-Security-Policy": REPORT_CSP}
    return FileResponse(path, media_type="text/html", headers=headers)
