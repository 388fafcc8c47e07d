"""Small corpus files written for a test."""

from __future__ import annotations

from pathlib import Path


def write_txt(path: Path, paragraphs: list[str]) -> Path:
    """A .txt corpus with one blank-line-separated paragraph per entry."""
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return path
