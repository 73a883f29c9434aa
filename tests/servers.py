"""Real servers for end-to-end tests: `iflow2api serve` in a subprocess, as a user starts it.

Each server's home (/tmp/iflow2api-e2e-*) is removed when it stops, its log read first so
failure messages can still quote it; one never stopped goes when it is collected or at exit.
IFLOW2API_KEEP_TEST_DIRS=1 keeps them all, to look into a failed test's database and logs."""

from __future__ import annotations

import atexit
import functools
import itertools
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Self

import httpx

ROOT = Path(__file__).resolve().parent.parent
KEEP_DIRS = "IFLOW2API_KEEP_TEST_DIRS"
# A SQLite database migrated once per test run, copied into each new server's home: `serve`
# then finds nothing to apply (1.5 s less per server start, ~100 starts a run).
_migrated: dict[str, Path] = {}


def migrated_database() -> Path:
    """The migrated template database of this test run (built on first use)."""
    if "db" not in _migrated:
        home = Path(tempfile.mkdtemp(prefix="iflow2api-template-"))
        env = {k: v for k, v in os.environ.items()
               if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}}
        env.update(IFLOW2API_HOME=str(home), IMPORT_IFLOW_SETTINGS="0")
        subprocess.run([sys.executable, "-m", "iflow2api_site.cli", "migrate", "--noinput",
                        "--verbosity", "0"], cwd=ROOT, env=env, capture_output=True,
                       timeout=300, check=True)
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        _migrated["db"] = home / "db.sqlite3"
    return _migrated["db"]


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


PORT_BLOCK = 1000
_port_turn = itertools.count(random.randrange(PORT_BLOCK))


@functools.cache
def _worker_block() -> range | None:
    """This test process's ports: a block of its own (pytest-xdist's PYTEST_XDIST_WORKER gwN),
    below the kernel's ephemeral range; None where there is no room for it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    top = _ephemeral_low() - index * PORT_BLOCK
    return range(top - PORT_BLOCK, top) if top - PORT_BLOCK >= 10000 else None


def free_port() -> int:
    """A loopback port nothing listens on, for a server that binds it a moment later. Not one
    the kernel hands out: outgoing connections take their local ports from the ephemeral
    range, and with test processes running side by side one of theirs took such a port before
    our server bound it. Each process takes its own block's ports in turn."""
    block = _worker_block()
    for _ in range(len(block) if block else 0):
        port = block[next(_port_turn) % len(block)]  # type: ignore[index]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GatewayServer:
    """`iflow2api serve` on a free loopback port with its own IFLOW2API_HOME."""

    def __init__(self, env: dict[str, str] | None = None, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.home = tempfile.mkdtemp(prefix="iflow2api-e2e-")
        # The directory made here (a subclass may point self.home elsewhere: not ours), and
        # its removal: once, at stop() or else when collected or at exit.
        self.own_home = Path(self.home)
        self.removal = (None if os.environ.get(KEEP_DIRS) else
                        weakref.finalize(self, shutil.rmtree, self.own_home, ignore_errors=True))
        self.kept: dict[Path, str] = {}  # the logs as they were when the home was removed
        self.env = {
            k: v for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "REDIS_URL", "IFLOW_API_KEY", "IFLOW_BASE_URL",
                         "UPSTREAM_BASE_URL", "UPSTREAM_API_KEY", "UPSTREAM_MODELS",
                         "UPSTREAM_LABEL", "UPSTREAM_PROVIDER", "UPSTREAM_AUTH_HEADER",
                         "UPSTREAM_BETA_POLICY", "UPSTREAM_ALLOW_BETAS",
                         "UPSTREAM_ANTHROPIC_VERSION", "IFLOW2API_API_KEYS",
                         "DJANGO_SETTINGS_MODULE"}
        }
        self.env.update({
            "IFLOW2API_HOME": self.home,
            "IMPORT_IFLOW_SETTINGS": "0",
            "KEEPALIVE_SECONDS": "0.5",
            "STREAM_PRELUDE_SECONDS": "0.3",
            "UPSTREAM_READ_TIMEOUT": "3",
            # Shared test servers play many rate-limit and auth errors in a row: the account
            # must not sit out a cooldown after each (pool tests set their own values).
            "RATE_LIMIT_COOLDOWN_SECONDS": "0",
            "AUTH_COOLDOWN_SECONDS": "0",
            "PYTHONUNBUFFERED": "1",
        })
        self.env.update(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(self.home) / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr_target(self) -> Any:
        """Where the server's stderr goes: with stdout into the log (subclasses may split)."""
        return subprocess.STDOUT

    def everything_written(self) -> str:
        """All the server wrote, for failure messages."""
        return self.output()

    def start(self, timeout: float = 40.0) -> Self:
        if self.removal is not None and not self.removal.alive:
            raise RuntimeError("its home was removed when it stopped: stop(keep_home=True) "
                               "to start it again")
        try:
            self.wait_up(timeout)
        except BaseException:
            self.stop()  # `with` never reaches __exit__ when __enter__ fails
            raise
        return self

    def wait_up(self, timeout: float) -> None:
        database = Path(self.env["IFLOW2API_HOME"]) / "db.sqlite3"
        if (not self.env.get("DATABASE_URL") and database.parent.is_dir()
                and not database.exists()):
            shutil.copyfile(migrated_database(), database)
            database.chmod(0o600)
        with self.log_path.open("wb") as log:  # the server holds its own copy
            self.process = subprocess.Popen(
                [sys.executable, "-m", "iflow2api_site.cli", "serve", "--port", str(self.port)],
                cwd=ROOT, env=self.env, stdout=log, stderr=self.stderr_target(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.everything_written()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not come up:\n{self.everything_written()}")

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Runs an `iflow2api` command against this server's home and database."""
        return subprocess.run(
            [sys.executable, "-m", "iflow2api_site.cli", *args], cwd=ROOT, env=self.env,
            input=stdin, capture_output=True, text=True, timeout=120, check=True)

    def shell(self, code: str) -> str:
        """Runs Python in `iflow2api shell` (Django set up) and returns its output."""
        return self.cli("shell", "-c", code).stdout

    def output(self) -> str:
        return self.read(self.log_path)

    def read(self, path: Path) -> str:
        """A file the server wrote; once its home is removed, the text it had then."""
        if path in self.kept:
            return self.kept[path]
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, *, keep_home: bool = False) -> None:
        """Ends the server, then removes its home unless `keep_home` (to start it again)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if not keep_home:
            self.remove_home()

    def remove_home(self) -> None:
        if self.removal is None or not self.removal.alive:
            return
        self.kept.update((path, self.read(path)) for path in self.own_home.glob("*.log"))
        self.removal()

    def __enter__(self) -> GatewayServer:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
