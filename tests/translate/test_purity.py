"""proxy/translate is pure: only the standard library and proxy.translate itself."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "proxy" / "translate"
MODULES = sorted(PACKAGE.glob("*.py"))


def imported_roots(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside proxy.translate by construction
                continue
            names.append(node.module or "")
    return names


def allowed(name: str) -> bool:
    if name == "proxy.translate" or name.startswith("proxy.translate."):
        return True
    root = name.split(".")[0]
    return root == "__future__" or root in sys.stdlib_module_names


def test_modules_found() -> None:
    assert len(MODULES) >= 8


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_are_pure(path: Path) -> None:
    bad = [n for n in imported_roots(path) if not allowed(n)]
    assert not bad, f"{path.name} imports {bad}: proxy/translate must stay standard-library only"
