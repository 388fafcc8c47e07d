"""The built wheel carries prompts/, reports/ and migrations and works outside the checkout."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What `autolabel --help` and `autolabel db upgrade` import; the heavy ML stack (torch,
# transformers, sae-lens) is imported lazily by the commands that need it, so the wheel's own
# contents are tested here without a multi-minute install of the full dependency set.
CLI_DEPS = ["click", "sqlalchemy>=2", "alembic", "pydantic>=2", "platformdirs", "filelock", "numpy",
            "jinja2", "rich"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True)
    return next(out.glob("autolabel-*.whl"))


@pytest.mark.slow
def test_wheel_contains_resources(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "autolabel/migrations/env.py" in names
    assert any(n.startswith("autolabel/migrations/versions/0001") for n in names)
    assert any(n.startswith("autolabel/prompts/") for n in names)
    assert any(n.startswith("autolabel/reports/") for n in names)
    assert not any(n.startswith(("prompts/", "reports/", "alembic/")) for n in names)


@pytest.mark.slow
def test_wheel_in_fresh_venv_runs_db_upgrade(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", *CLI_DEPS], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    exe = env_dir / "bin" / "autolabel"
    help_out = subprocess.run([exe, "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert help_out.returncode == 0 and "db" in help_out.stdout
    db = tmp_path / "w.db"
    for args in (["db", "upgrade"], ["db", "check"]):
        done = subprocess.run([exe, "--db", str(db), *args], capture_output=True, text=True,
                              cwd=tmp_path)
        assert done.returncode == 0, done.stderr
