"""A production-shaped deployment as real processes, for end-to-end tests.

`ProductionStack` starts on loopback what docker/docker-compose.yml with the scale override
runs: a fresh PostgreSQL database, a Redis database of its own, the entrypoint's `migrate` role
once, two web processes (`iflow2api serve --no-migrate --port A|B`), a Celery worker (prefork
pool, as the image runs it) and Celery beat, and — when nginx is installed — nginx in front of
both web processes with docker/nginx.conf.example, only its upstream servers and listen address
changed. Every process shares DATABASE_URL, REDIS_URL, FIELD_ENCRYPTION_KEY and
DJANGO_SECRET_KEY and has an IFLOW2API_HOME of its own, as separate containers would::

    with ProductionStack({"IFLOW_API_KEY": key, "IFLOW_BASE_URL": fake.base_url}) as stack:
        httpx.get(stack.url + "/health")      # through nginx (web A without nginx)
        httpx.get(stack.web[1].url + "/health")
        stack.shell("from accounts.models import Account; print(Account.objects.count())")

Every process runs in a session of its own. Stopping the stack ends them as `docker stop`
would (nginx: SIGQUIT; web, worker, beat: SIGTERM), records their exit codes, then looks for
anything of theirs still alive (`orphans`), kills it, and drops the database and the Redis
database.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.servers import ROOT, GatewayServer, free_port
from tests.services import REDIS_URL, fresh_postgres_database, require_postgres, require_redis

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
# Every process of a stack carries this variable: what is left after a stop is found by it
# (and by process group), whatever re-parented it.
MARKER = "IFLOW2API_STACK_ID"
# Settings the developer's shell or another test may have set: a stack starts without them.
UNSET = {"IFLOW2API_HOST", "IFLOW2API_PORT", "FIELD_ENCRYPTION_KEY", "DJANGO_SECRET_KEY",
         "DB_WAIT_SECONDS", "MIGRATE_ON_START", "MIGRATE_LOCK_SECONDS", "IFLOW2API_TEST_STACK",
         "DATABASE_POOL", MARKER}


def production_mode() -> bool:
    """IFLOW2API_TEST_STACK=production: the `gateway` fixture is a whole ProductionStack."""
    return os.environ.get("IFLOW2API_TEST_STACK", "").strip().lower() == "production"


def skip_in_production_mode(reason: str, *, only_behind_nginx: bool = False
                            ) -> pytest.MarkDecorator:
    """For tests that cannot run against the stack (or against nginx in front of it), with
    the principled reason why."""
    skip = production_mode() and (NGINX is not None or not only_behind_nginx)
    return pytest.mark.skipif(skip, reason=f"IFLOW2API_TEST_STACK=production: {reason}")


def require_stack() -> None:
    """Skips the calling test unless PostgreSQL, Redis and the Redis extras are there."""
    require_postgres()
    require_redis()
    missing = [name for name in ("celery", "redis", "django_redis", "channels_redis")
               if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"the production stack needs {', '.join(missing)} "
                    "(pip install -e '.[test,redis]')")


class WebProcess(GatewayServer):
    """`iflow2api serve --no-migrate --port N` as the web role runs it, in its own session."""

    def __init__(self, name: str, env: dict[str, str], home: Path, port: int | None = None):
        super().__init__(env, port=port)
        for unset in UNSET - set(env):
            self.env.pop(unset, None)
        shutil.rmtree(self.home, ignore_errors=True)  # ours lives in the stack's directory
        home.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.home = str(home)
        self.env["IFLOW2API_HOME"] = self.home
        self.log_path = home / "server.log"

    def launch(self) -> None:
        with self.log_path.open("ab") as log:  # a restart appends
            self.process = subprocess.Popen(
                [sys.executable, "-m", "iflow2api_site.cli", "serve", "--no-migrate",
                 "--port", str(self.port)],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not come up within {timeout} s:\n{self.output()}")

    def start(self, timeout: float = 60.0) -> WebProcess:
        self.launch()
        self.wait_healthy(timeout)
        return self

    def stop(self) -> None:
        _end(self.process, signal.SIGTERM, timeout=30)


class Role:
    """A background process of the stack (worker, beat, nginx), output in a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path,
                 log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}):\n"
                                   f"{self.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {text!r} within {timeout} s:\n"
                                   f"{self.output()}")
            time.sleep(0.1)


def _end(process: subprocess.Popen[bytes] | None, sig: signal.Signals | None,
         timeout: float) -> None:
    """Signal a process (once: a second SIGTERM means "stop at once" to the web role), wait
    for it, and SIGKILL its whole session if it does not go."""
    if process is None or process.poll() is not None:
        return
    if sig is not None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def nginx_site(replicas: list[int], listen: int) -> str:
    """docker/nginx.conf.example with its compose upstream replaced by loopback replicas."""
    text = (ROOT / "docker" / "nginx.conf.example").read_text()
    servers = "".join(f"    server 127.0.0.1:{port} max_fails=3 fail_timeout=10s;\n"
                      for port in replicas)
    text, count = re.subn(r"^    server web:28000 .*;\n", servers, text, flags=re.M)
    assert count == 1, "the upstream block of docker/nginx.conf.example changed"
    text, count = re.subn(r"^    listen 80;$", f"    listen 127.0.0.1:{listen};", text,
                          flags=re.M)
    assert count == 1, "the listen line of docker/nginx.conf.example changed"
    return text


class ProductionStack:
    """See the module docstring. `env` goes to every process (e.g. IFLOW_API_KEY and
    IFLOW_BASE_URL); `redis_db` is a Redis database number this stack owns and empties."""

    def __init__(self, env: dict[str, str] | None = None, *, redis_db: int = 13,
                 nginx: bool = True, refresh_check_seconds: int = 2) -> None:
        self.extra_env = dict(env or {})
        self.redis_url = REDIS_URL.rsplit("/", 1)[0] + f"/{redis_db}"
        self.use_nginx = nginx and NGINX is not None
        self.refresh_check_seconds = refresh_check_seconds
        self.id = secrets.token_hex(8)
        self.dir = Path(tempfile.gettempdir()) / f"iflow2api-stack-{self.id}"  # made by start()
        self.database_url = ""
        self.admin: WebProcess | None = None  # the environment `cli()` and `shell()` run in
        self.web: list[WebProcess] = []
        self.roles: dict[str, Role] = {}
        self.nginx_port: int | None = None
        self.exit_codes: dict[str, int | None] = {}
        self.orphans: list[str] = []
        self._pgids: set[int] = set()
        self._cleanup = ExitStack()

    # --- addresses ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """nginx in front of both web processes, or web A when nginx is not installed."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def port(self) -> int:
        return self.nginx_port if self.nginx_port is not None else self.web[0].port

    @property
    def urls(self) -> list[str]:
        """Each web process directly."""
        return [web.url for web in self.web]

    @property
    def env(self) -> dict[str, str]:
        assert self.admin is not None
        return self.admin.env

    # --- commands against the shared database ---------------------------------------------------

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        assert self.admin is not None
        return self.admin.cli(*args, stdin=stdin)

    def shell(self, code: str) -> str:
        assert self.admin is not None
        return self.admin.shell(code)

    def output(self) -> str:
        parts = [f"--- {web.name} ---\n{web.output()}" for web in self.web]
        parts += [f"--- {role.name} ---\n{role.output()}" for role in self.roles.values()]
        return "\n".join(parts)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ProductionStack:
        require_stack()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.dir.mkdir(mode=0o700)
        self.database_url = self._cleanup.enter_context(fresh_postgres_database())
        self._flush_redis()
        shared = {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "DJANGO_SECRET_KEY": "production-stack-" + secrets.token_hex(24),
            "REFRESH_CHECK_SECONDS": str(self.refresh_check_seconds),
            "PYTHONPATH": str(ROOT),
            "LOG_LEVEL": "INFO",
            MARKER: self.id,
            **self.extra_env,
        }
        self.admin = WebProcess("cli", shared, self.dir / "cli")
        self._migrate()

        ports = [free_port(), free_port()]
        self.web = [WebProcess(f"web-{letter}", self.admin.env, self.dir / f"web-{letter}",
                               port=port) for letter, port in zip("ab", ports, strict=True)]
        for web in self.web:
            web.launch()
            self._pgids.add(web.process.pid)  # type: ignore[union-attr]
        celery = [sys.executable, "-m", "celery", "-A", "iflow2api_site"]
        self._role("worker", [*celery, "worker", "-l", "info", "--concurrency", "2",
                              "-n", f"stack-{self.id}@%h", "--without-gossip",
                              "--without-mingle", "--without-heartbeat"])
        self._role("beat", [*celery, "beat", "-l", "info", "-S", "django"])
        for web in self.web:
            web.wait_healthy()
        self.roles["worker"].wait_for(" ready.", timeout=60)
        self.roles["beat"].wait_for("beat: Starting", timeout=60)
        if self.use_nginx:
            self._start_nginx(ports)

    def _role(self, name: str, command: list[str]) -> Role:
        assert self.admin is not None
        home = self.dir / name
        home.mkdir(exist_ok=True)
        role = Role(name, command, {**self.admin.env, "IFLOW2API_HOME": str(home)}, home,
                    home / f"{name}.log")
        self.roles[name] = role
        self._pgids.add(role.process.pid)
        return role

    def _migrate(self) -> None:
        """docker/entrypoint.sh's `migrate` role: wait for the database, migrate under the
        advisory lock, exit."""
        assert self.admin is not None
        env = {**self.admin.env,
               "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                        os.environ.get("PATH", "")])}
        done = subprocess.run(["sh", str(ENTRYPOINT), "migrate"], cwd=ROOT, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=180)
        (self.dir / "migrate.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"the migrate role failed ({done.returncode}):\n"
                               f"{done.stdout}{done.stderr}")

    def _start_nginx(self, replicas: list[int]) -> None:
        assert NGINX is not None
        home = self.dir / "nginx"
        home.mkdir()
        self.nginx_port = free_port()
        (home / "site.conf").write_text(nginx_site(replicas, self.nginx_port))
        user = "user root;\n" if os.geteuid() == 0 else ""
        (home / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {home}/nginx.pid;\n"
            f"error_log {home}/error.log;\nevents {{}}\n"
            f"http {{\n  access_log off;\n  client_body_temp_path {home}/body;\n"
            f"  proxy_temp_path {home}/proxy;\n  include {home}/site.conf;\n}}\n")
        command = [NGINX, "-p", str(home), "-e", str(home / "error.log"),
                   "-c", str(home / "nginx.conf")]
        check = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"nginx refuses the adapted example:\n{check.stderr}")
        role = Role("nginx", command, dict(os.environ), home, home / "error.log.out")
        self.roles["nginx"] = role
        self._pgids.add(role.process.pid)
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if role.process.poll() is not None or time.monotonic() > deadline:
                error_log = (home / "error.log").read_text(errors="replace") \
                    if (home / "error.log").exists() else ""
                raise RuntimeError(f"nginx did not come up:\n{error_log}")
            time.sleep(0.1)

    def stop(self) -> dict[str, int | None]:
        """Stops every process as `docker stop` would and returns their exit codes; whatever
        is still alive afterwards is listed in `orphans` and killed."""
        if "nginx" in self.roles:  # first: no new requests reach the web processes
            _end(self.roles["nginx"].process, signal.SIGQUIT, timeout=15)
        # Then the web processes (they drain together), then beat and the worker (warm
        # shutdown: a task that runs finishes).
        for group in ([web.process for web in self.web],
                      [self.roles[name].process for name in ("beat", "worker")
                       if name in self.roles]):
            for process in group:
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in group:
                _end(process, None, timeout=40)
        self.exit_codes = {web.name: web.process.returncode if web.process else None
                           for web in self.web}
        self.exit_codes.update({name: role.process.returncode
                                for name, role in self.roles.items()})
        # A web process restarted by a test (WebProcess.start) has a session of its own too.
        self._pgids.update(web.process.pid for web in self.web if web.process is not None)
        time.sleep(0.2)  # a child that outlived its parent shows up now
        self.orphans = self.leftovers()
        for pgid in self._pgids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        for line in self.orphans:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
        self._cleanup.close()  # drops the database
        self._flush_redis()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.exit_codes

    def leftovers(self) -> list[str]:
        """`pid command` of every process still alive from this stack: in one of its process
        groups, or carrying its marker in the environment."""
        marker = f"{MARKER}={self.id}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                stat = (entry / "stat").read_text()
                pgrp = int(stat.rsplit(")", 1)[1].split()[2])
                ours = pgrp in self._pgids
                if not ours:
                    ours = marker in (entry / "environ").read_bytes().split(b"\0")
                if ours:
                    command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                    found.append(f"{entry.name} {command.decode(errors='replace').strip()}")
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile, or not ours to read
        return found

    def _flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(self.redis_url).flushdb()

    def __enter__(self) -> ProductionStack:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop()
        if self.orphans and exc_type is None:
            raise AssertionError(f"processes left after the stack stopped: {self.orphans}")
