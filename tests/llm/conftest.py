"""Fixtures shared by the LLM client tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from autolabel.db import Database, open_database


@pytest.fixture
def database(tmp_path: Path) -> Database:
    """A fresh, migrated SQLite database for llm_calls rows."""
    return open_database(f"sqlite:///{tmp_path}/t.db")
