"""Import boundaries: translation is pure, only the upstream client and OAuth speak HTTP,
and the apps proxy calls into never import proxy."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HTTP_LIBRARIES = {"httpx", "aiohttp", "requests", "urllib3", "http.client", "urllib.request"}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def python_files(*parts: str) -> list[Path]:
    return sorted(p for p in ROOT.joinpath(*parts).rglob("*.py") if "migrations" not in p.parts)


def test_accounts_and_instances_never_import_proxy():
    for path in python_files("accounts") + python_files("instances"):
        bad = {n for n in imports_of(path) if n == "proxy" or n.startswith("proxy.")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_only_the_upstream_client_and_oauth_speak_http():
    allowed = {ROOT / "upstream/client.py", ROOT / "upstream/images.py",
               ROOT / "accounts/oauth.py"}
    for path in (python_files("proxy") + python_files("accounts") + python_files("instances")
                 + python_files("upstream")):
        if path in allowed:
            continue
        bad = {n for n in imports_of(path)
               if any(n == lib or n.startswith(lib + ".") for lib in HTTP_LIBRARIES)}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_providers_do_no_io_and_know_no_django():
    for path in python_files("upstream", "providers"):
        bad = {n for n in imports_of(path)
               if n.split(".")[0] in {"django", "httpx", "aiohttp", "socket", "accounts"}}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
