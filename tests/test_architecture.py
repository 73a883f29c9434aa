"""Import boundaries: translation is pure, only the upstream client and OAuth speak HTTP,
the apps proxy calls into never import proxy, the layers only import downwards and no modules
import each other in a cycle.

The layers, top to bottom: iflow2api_site (settings, ASGI, server, CLI) > desktop > proxy >
accounts, instances > upstream > iflow2api_lib."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HTTP_LIBRARIES = {"httpx", "aiohttp", "requests", "urllib3", "http.client", "urllib.request"}
SITE = "iflow2api_site"
APPS = ("accounts", "instances", "proxy")
LIBRARY = "iflow2api_lib"
UPSTREAM = "upstream"
DESKTOP = "desktop"
FIRST_PARTY = (SITE, DESKTOP, *APPS, UPSTREAM, LIBRARY)


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


# --- the module import graph ---------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def first_party_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p): p for package in FIRST_PARTY
            for p in sorted(root.joinpath(package).rglob("*.py")) if "migrations" not in p.parts}


def imported_names(name: str, path: Path) -> Iterator[str]:
    """Every module `name` imports, at module level, inside functions (a late import is still an
    import) or under `if TYPE_CHECKING:` (a type is a dependency too), as the names it could be:
    `from a import b` may be module a.b."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                package = name.split(".")
                keep = len(package) - node.level + (path.name == "__init__.py")
                base = ".".join(package[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the first-party modules it imports (the longest name that is one)."""
    modules = first_party_modules(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target in imported_names(name, path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def imports_of_package(package: str) -> Iterator[tuple[str, str]]:
    """(module, what it imports) for every module of `package`, late imports included."""
    for name, path in first_party_modules().items():
        if name == package or name.startswith(package + "."):
            for target in imported_names(name, path):
                yield name, target


def reaches(target: str, packages: tuple[str, ...]) -> bool:
    return any(target == p or target.startswith(p + ".") for p in packages)


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_no_module_imports_itself_back_through_others():
    cycles = import_cycles(import_graph())
    assert not cycles, f"import cycles (late imports count too): {cycles}"


def test_nothing_below_the_site_imports_the_site():
    bad = [(m, t) for package in (DESKTOP, *APPS, UPSTREAM, LIBRARY)
           for m, t in imports_of_package(package) if reaches(t, (SITE,))]
    assert not bad, f"imports of {SITE} from below it: {bad}"


def test_the_apps_never_import_the_desktop():
    bad = [(m, t) for package in (*APPS, UPSTREAM, LIBRARY)
           for m, t in imports_of_package(package) if reaches(t, (DESKTOP,))]
    assert not bad, bad


def test_upstream_imports_no_app_and_no_django():
    bad = [(m, t) for m, t in imports_of_package(UPSTREAM)
           if reaches(t, (SITE, DESKTOP, *APPS, "django"))]
    assert not bad, f"upstream must stay framework-free: {bad}"


def test_the_library_imports_no_app_and_not_upstream():
    bad = [(m, t) for m, t in imports_of_package(LIBRARY)
           if reaches(t, (SITE, DESKTOP, *APPS, UPSTREAM))]
    assert not bad, f"{LIBRARY} is the bottom layer: {bad}"


def test_the_library_reads_no_settings_at_import_time():
    for name, path in first_party_modules().items():
        if not reaches(name, (LIBRARY,)):
            continue
        top_level = ast.parse(path.read_text(encoding="utf-8")).body
        bad = [n.module for n in top_level
               if isinstance(n, ast.ImportFrom) and n.module == "django.conf"]
        assert not bad, f"{name} imports django.conf at import time"
