"""Locate the data folders shipped inside the package (prompts, reports, web app, migrations).

They are found through ``importlib.resources`` so an installed wheel works anywhere; in a
development checkout ``autolabel/{prompts,reports,web,migrations}`` are symlinks to the top-level
folders, and the wheel carries the real folders in their place (pyproject ``force-include``).
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

from autolabel.errors import AutolabelError


def resource_dir(name: str) -> Path:
    """Filesystem path of a packaged folder; a broken install is a clear error."""
    with as_file(files("autolabel") / name) as path:
        if not Path(path).is_dir():
            raise AutolabelError(
                f"packaged folder autolabel/{name} is missing; reinstall autolabel "
                "(pip install --force-reinstall autolabel)"
            )
        return Path(path)


def prompts_dir() -> Path:
    """Jinja2 prompt templates (versioned, hashed into provenance)."""
    return resource_dir("prompts")


def reports_dir() -> Path:
    """Jinja2 report templates and CSS."""
    return resource_dir("reports")


def web_dir() -> Path:
    """Templates and static assets of ``autolabel serve`` (``templates/``, ``static/``)."""
    return resource_dir("web")


def migrations_dir() -> Path:
    """Alembic migration scripts."""
    return resource_dir("migrations")
