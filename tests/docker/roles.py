"""docker/entrypoint.sh run for real, as the container runs it: `sh entrypoint.sh <role>`.

The image installs the package, so `iflow2api`, `celery` and `python` are on PATH there; here
a shim directory provides `iflow2api` (this checkout, run by the test interpreter) in front of
the virtualenv's `python` and `celery`. Every process gets its own session, so a test can kill
the whole group (Celery's pool, a migration the shell started) whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers import ROOT
from tests.services import REDIS_URL

ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
# A Redis database of their own: beat publishes the refresh task at start, and nothing here
# should reach the queue other tests' servers use.
DOCKER_REDIS_URL = REDIS_URL.rsplit("/", 1)[0] + "/14"
CLIENT_KEY = "sk-docker-entrypoint-test"
# Settings other tests or the developer's shell may have set: the container starts without them.
UNSET = {
    "DATABASE_URL", "REDIS_URL", "IFLOW_API_KEY", "IFLOW_BASE_URL", "UPSTREAM_BASE_URL",
    "UPSTREAM_API_KEY", "UPSTREAM_MODELS", "IFLOW2API_API_KEYS", "IFLOW2API_HOST",
    "IFLOW2API_PORT", "FIELD_ENCRYPTION_KEY", "DJANGO_SECRET_KEY", "DB_WAIT_SECONDS",
    "MIGRATE_ON_START", "MIGRATE_LOCK_SECONDS",
}


def migrate_lock_id() -> int:
    match = re.search(r"^MIGRATE_LOCK_ID=(\d+)$", ENTRYPOINT.read_text(), re.M)
    assert match, "MIGRATE_LOCK_ID not found in docker/entrypoint.sh"
    return int(match.group(1))


def container_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of one container: its own IFLOW2API_HOME, loopback only, client keys."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "iflow2api"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m iflow2api_site.cli "$@"\n')
    shim.chmod(0o755)
    home = tmp / "data"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update({
        "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent),
                                 os.environ.get("PATH", "")]),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "DJANGO_SETTINGS_MODULE": "iflow2api_site.settings",  # as the image sets it
        "IFLOW2API_HOME": str(home),
        "HOME": str(home),
        "IFLOW2API_HOST": "127.0.0.1",  # never anything but loopback in tests
        "IFLOW2API_API_KEYS": CLIENT_KEY,
        "IMPORT_IFLOW_SETTINGS": "0",
    })
    env.update(extra)
    return env


class Role:
    """`sh docker/entrypoint.sh <role> [args]` in its own session, output in a log file."""

    def __init__(self, env: dict[str, str], role: str, *args: str, log: Path) -> None:
        self.log_path = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                ["sh", str(ENTRYPOINT), role, *args], env=env, cwd=env["IFLOW2API_HOME"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s:\n{self.output()}") from None

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if not self.running():
                raise AssertionError(f"exited ({self.process.returncode}) before {text!r}:\n"
                                     f"{self.output()}")
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} within {timeout} s:\n{self.output()}")

    def command_line(self) -> list[str]:
        """What runs under the entrypoint's pid now (after `exec`, the role's program)."""
        raw = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        return [part.decode() for part in raw.split(b"\0") if part]

    def terminate(self, timeout: float) -> int:
        """SIGTERM to the entrypoint's pid only, as `docker stop` does; its exit code."""
        os.kill(self.pid, signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """Whatever is left of the process group (for `finally`)."""
        if self.running():
            self.process.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)

    def __enter__(self) -> Role:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def dockerfile_healthcheck() -> list[str]:
    """The image's HEALTHCHECK command (exec form), as the engine runs it."""
    text = (ROOT / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK\b.*?\bCMD\s+(\[.*\])\s*$", text, re.M)
    assert match, "no exec-form HEALTHCHECK CMD in docker/Dockerfile"
    return json.loads(match.group(1))


def compose_healthcheck(service: str) -> list[str]:
    """A service's health check command from docker/docker-compose.yml, as the engine runs it
    (CMD-SHELL through `sh -c`; compose's `$$` is a literal `$`)."""
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the compose file")
    compose = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())
    test = compose["services"][service]["healthcheck"]["test"]
    kind, *args = [part.replace("$$", "$") for part in test]
    if kind == "CMD-SHELL":
        return ["sh", "-c", *args]
    assert kind == "CMD", test
    return args
