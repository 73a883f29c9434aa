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


# --- no module-level mutable state in the apps -----------------------------------------------
#
# A process's state lives in its Runtime (proxy/runtime.py), built when the server starts and
# handed to what needs it; tests build their own. A module of the apps, upstream, the library or
# the desktop may keep constants (tables never changed after import, compiled regexes, frozen
# dataclasses) but no state: no `global` statement, no module-level container that a function
# mutates, no module-level instance of what a Runtime holds (or of a lock, an executor, a
# queue, a registry), no function-level cache (functools.cache / lru_cache) holding what it
# computed.
# A ContextVar is context-local (a request's id), not process state.

# Not the site: it is where a process is put together (settings, the ASGI app and its Runtime).
STATE_PACKAGES = (*APPS, UPSTREAM, LIBRARY, DESKTOP)
CONTAINER_CALLS = {"dict", "list", "set", "bytearray", "defaultdict", "OrderedDict", "deque",
                   "ChainMap"}
MUTATORS = {"append", "extend", "insert", "add", "update", "setdefault", "pop", "popitem",
            "clear", "remove", "discard", "sort", "reverse", "appendleft", "extendleft",
            "popleft", "rotate", "__setitem__", "__delitem__", "subtract"}
# Instances that are state whatever is done with them (besides the Runtime's parts, below).
STATEFUL_CALLS = {"ThreadPoolExecutor", "ProcessPoolExecutor", "Lock", "RLock", "Semaphore",
                  "BoundedSemaphore", "Event", "Condition", "Queue", "SimpleQueue", "LifoQueue",
                  "PriorityQueue", "local", "WeakKeyDictionary", "WeakValueDictionary", "WeakSet",
                  "CollectorRegistry", "Counter", "Gauge", "Histogram", "Summary", "Future"}
CACHES = {"cache", "lru_cache"}

# What stays, and why. Keys: "<path>:<name>", the name a module binds (or `global`s, or the
# cached function). A key that no longer matches anything fails too: the list stays true.
ALLOWED_STATE = {
    # The ORM decrypts secrets in EncryptedTextField.from_db_value, which no Runtime reaches
    # (commands, Celery, migrations and the admin decrypt too). The key ring is a function of
    # FIELD_ENCRYPTION_KEY or of the key file; a setting change in tests resets it.
    "accounts/crypto.py:_ring": "memo: the key ring of a key tuple (Fernet objects built once)",
    "accounts/crypto.py:_file_ring": "memo: the key ring of a key file by mtime, size, inode",
    "accounts/crypto.py:_last_good": "per key file, the ring last read: a vanished or half-"
                                     "written file must not swap the keys of a running process",
    # Pure memos: the same arguments always give an equal, never-mutated value; nothing is
    # counted, no client is held.
    "proxy/cors.py:policy_of": "memo: the CorsPolicy of an instance's origins (hot path)",
    "proxy/requestlog.py:insert_sql": "memo: the request log's INSERT per database vendor",
    "proxy/docs_pages.py:_patched_redoc": "memo: the packaged ReDoc script, patched once",
    "iflow2api_lib/conf.py:_read": "memo: settings as read from Django, forgotten whenever a "
                                   "setting changes (setting_changed)",
    "iflow2api_lib/logs.py:_clean_paths": "memo: access-line paths the masking leaves as they "
                                          "are (bounded; a path with a secret is never kept)",
}


def runtime_parts(root: Path = ROOT) -> set[str]:
    """The class names the Runtime's fields are annotated with (proxy/runtime.py), and the
    Runtime: a module-level instance of one is a second, hidden Runtime part."""
    tree = ast.parse((root / "proxy" / "runtime.py").read_text(encoding="utf-8"))
    runtime = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Runtime")
    names = {"Runtime"}
    for node in runtime.body:
        if isinstance(node, ast.AnnAssign):
            names.update(n.id for n in ast.walk(node.annotation)
                         if isinstance(n, ast.Name) and n.id[:1].isupper())
    return names - {"None"}


def _callee(node: ast.expr) -> str | None:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Subscript):  # Snapshot[Routing](...)
        node = node.value
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else None


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _local_names(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    args = function.args
    names = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs,
                             *([args.vararg] if args.vararg else []),
                             *([args.kwarg] if args.kwarg else [])]}
    declared = {name for n in ast.walk(function) if isinstance(n, ast.Global | ast.Nonlocal)
                for name in n.names}
    stored = {n.id for n in ast.walk(function)
              if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names | (stored - declared)


def module_state(source: str, stateful: set[str]) -> dict[str, str]:
    """name → what makes it state, for one module's source."""
    tree = ast.parse(source)
    found: dict[str, str] = {}
    containers: set[str] = set()
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, ast.AnnAssign) and node.value else [])
        value = getattr(node, "value", None)
        for name in (t.id for t in targets if isinstance(t, ast.Name)):
            if isinstance(value, ast.Dict | ast.List | ast.Set | ast.DictComp | ast.ListComp
                          | ast.SetComp) or (isinstance(value, ast.Call)
                                             and _callee(value) in CONTAINER_CALLS):
                containers.add(name)
            elif isinstance(value, ast.Call) and _callee(value) in stateful | STATEFUL_CALLS:
                found[name] = f"a module-level {_callee(value)}"
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    for function in [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                     ] + [m for c in classes for m in c.body
                          if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)]:
        for decorator in function.decorator_list:
            if _callee(decorator) in CACHES:
                found[function.name] = "a function cache (functools.cache / lru_cache)"
    for function in _functions(tree):
        local = _local_names(function)
        for node in ast.walk(function):
            if isinstance(node, ast.Global):
                found.update((name, "a `global` statement") for name in node.names)
                continue
            target: ast.expr | None = None
            if isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
                for t in getattr(node, "targets", None) or [node.target]:  # type: ignore[attr-defined]
                    if isinstance(t, ast.Subscript | ast.Attribute):
                        target = t.value
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr in MUTATORS):
                target = node.func.value
            if (isinstance(target, ast.Name) and target.id in containers
                    and target.id not in local):
                found[target.id] = f"a module-level container mutated in {function.name}()"
    return found


def app_state(root: Path = ROOT) -> dict[str, str]:
    """"<path>:<name>" → why, for every module of the packages below the site."""
    stateful = runtime_parts(root)
    found = {}
    for name, path in first_party_modules(root).items():
        if reaches(name, STATE_PACKAGES):
            rel = path.relative_to(root).as_posix()
            for what, why in module_state(path.read_text(encoding="utf-8"), stateful).items():
                found[f"{rel}:{what}"] = why
    return found


def test_the_state_finder_finds_state():
    source = '''
import functools
from concurrent.futures import ThreadPoolExecutor
TABLE = {"a": 1}                      # a constant: read only
_seen = {}                            # mutated below
_hits = []
executor = ThreadPoolExecutor(2)      # state whatever is done with it
pool = AccountPool(slots)             # a Runtime part, outside the Runtime
_count = 0

def remember(key, value):
    _seen[key] = value
    _hits.append(key)
    return TABLE[key]

def bump():
    global _count
    _count += 1

def shadowed(_hits):                  # a parameter: not the module's
    _hits.append(1)

@functools.lru_cache(maxsize=8)
def client_for(url):
    return object()
'''
    assert module_state(source, {"AccountPool"}) == {
        "_seen": "a module-level container mutated in remember()",
        "_hits": "a module-level container mutated in remember()",
        "executor": "a module-level ThreadPoolExecutor",
        "pool": "a module-level AccountPool",
        "_count": "a `global` statement",
        "client_for": "a function cache (functools.cache / lru_cache)",
    }
    assert {"Listeners", "Snapshot", "Metrics", "AccountWorkers", "AccountPool",
            "StatusPublisher", "Runtime"} <= runtime_parts()


def test_the_apps_keep_no_module_level_state():
    found = app_state()
    unexplained = {key: why for key, why in found.items() if key not in ALLOWED_STATE}
    assert not unexplained, (
        "module-level mutable state (put it in the Runtime, proxy/runtime.py, or make it a "
        f"constant; else add it to ALLOWED_STATE with the reason): {unexplained}")
    stale = set(ALLOWED_STATE) - set(found)
    assert not stale, f"ALLOWED_STATE lists what is no longer there: {stale}"
