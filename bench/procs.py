"""Child processes for the bench: start pinned in their own process group, wait, kill; CPU/RSS.

Every process is started with `start_new_session=True`, so `stop_all()` can end it and anything
it spawned with one killpg, SIGTERM first and SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

TASKSET = shutil.which("taskset")
CLK_TCK = os.sysconf("SC_CLK_TCK")
_started: list[subprocess.Popen[bytes]] = []
_logs: list[IO[bytes]] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(argv: list[str], cpu: int | None, log: Path, env: dict[str, str] | None = None,
          cwd: str | None = None) -> subprocess.Popen[bytes]:
    """Start argv (pinned to `cpu` with taskset when available), output to `log`."""
    if cpu is not None and TASKSET:
        argv = [TASKSET, "-c", str(cpu), *argv]
    out = open(log, "ab")  # noqa: SIM115 - closed in stop_all()
    _logs.append(out)
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=cwd, start_new_session=True)
    _started.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace)
    else:  # the leader is gone; its group may still have members
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def stop_all() -> None:
    while _started:
        stop(_started.pop())
    while _logs:
        _logs.pop().close()


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    assert url.startswith("http://127.0.0.1:"), url
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post(url: str, body: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    assert url.startswith("http://127.0.0.1:"), url
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": "Bearer sk-bench",
        "x-api-key": "sk-bench", "anthropic-version": "2023-06-01"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_http(url: str, proc: subprocess.Popen[bytes], limit: float) -> float:
    """Poll GET url until it answers 200; return the seconds it took. Raises on exit/timeout."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if http_get(url, timeout=1.0)[0] == 200:
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {limit:.0f} s")


def tree(pid: int) -> list[int]:
    """pid and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo and len(out) < 10_000:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except (OSError, ValueError, IndexError):
            continue
    return total


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            continue
    return total / CLK_TCK


class CpuMeter:
    """CPU use of a process tree between start() and stop(), in % of one core."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t0 = self.c0 = 0.0

    def start(self) -> None:
        self.t0, self.c0 = time.monotonic(), cpu_seconds(tree(self.pid))

    def stop(self) -> float:
        elapsed = time.monotonic() - self.t0
        return round(100 * (cpu_seconds(tree(self.pid)) - self.c0) / elapsed, 1) if elapsed else 0.0
