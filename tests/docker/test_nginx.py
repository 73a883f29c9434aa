"""docker/nginx.conf.example for real: nginx in front of two web replicas started by the
entrypoint (PostgreSQL, Redis): a slow stream passed through event by event, a large body
accepted, a rolling restart without a failed request. Loopback only; skipped without nginx."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.docker.roles import CLIENT_KEY, ROOT, Role, container_env
from tests.fakes import scenarios as sc
from tests.fakes.upstream import FakeUpstream
from tests.servers import free_port
from tests.services import fresh_postgres_database

pytestmark = pytest.mark.slow

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
UPSTREAM_KEY = "sk-fake-behind-nginx"
MODEL = "m-nginx"
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


def site_config(replicas: list[int], listen: int) -> str:
    """The example with its compose upstream replaced by loopback replicas."""
    text = (ROOT / "docker" / "nginx.conf.example").read_text()
    servers = "".join(f"    server 127.0.0.1:{port} max_fails=3 fail_timeout=10s;\n"
                      for port in replicas)
    text, count = re.subn(r"^    server web:28000 .*;\n", servers, text, flags=re.M)
    assert count == 1
    text, count = re.subn(r"^    listen 80;$", f"    listen 127.0.0.1:{listen};", text,
                          flags=re.M)
    assert count == 1
    return text


@contextmanager
def nginx(tmp: Path, site: str) -> Iterator[str]:
    tmp.mkdir()
    (tmp / "site.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""
    (tmp / "nginx.conf").write_text(
        f"{user}daemon off;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\n"
        "events {}\n"
        # The gateway's own `X-Accel-Buffering: no` is ignored here, so the stream test shows
        # what the example's proxy_buffering does by itself.
        f"http {{\n  access_log off;\n  proxy_ignore_headers X-Accel-Buffering;\n"
        f"  client_body_temp_path {tmp}/body;\n"
        f"  proxy_temp_path {tmp}/proxy;\n  include {tmp}/site.conf;\n}}\n")
    command = [NGINX, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(tmp / "nginx.conf")]
    test = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert test.returncode == 0, test.stderr
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        yield str(tmp)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def wait_healthy(url: str, role: Role, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert role.running(), role.output()
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not healthy within {timeout} s:\n{role.output()}")


def test_replicas_behind_the_nginx_example(tmp_path, redis_queue):
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    fake = FakeUpstream(api_key=UPSTREAM_KEY, flavor="openai", models=[MODEL])
    # Five content events 0.6 s apart: buffered, they would arrive all at once at the end.
    fake.default = sc.slow(sc.text("one two three four five", chunks=5), chunk_delay=0.6)
    with ExitStack() as stack, fresh_postgres_database() as database_url:
        stack.enter_context(fake)
        ports = [free_port(), free_port()]
        replicas = []
        # Each replica has its own /data here, as on separate hosts: they share the keys
        # through the environment (the first would not read the second's secrets otherwise).
        shared = {"FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
                  "DJANGO_SECRET_KEY": "replicas-share-this-signing-key-" + "x" * 20}
        for index, port in enumerate(ports):  # one after the other: the first migrates
            home = tmp_path / f"replica{index}"
            home.mkdir()
            env = container_env(home, DATABASE_URL=database_url, REDIS_URL=redis_queue,
                                IFLOW2API_PORT=str(port), UPSTREAM_BASE_URL=fake.base_url,
                                UPSTREAM_API_KEY=UPSTREAM_KEY, UPSTREAM_MODELS=MODEL,
                                STREAM_PRELUDE_SECONDS="0.2", KEEPALIVE_SECONDS="30", **shared)
            role = stack.enter_context(Role(env, "web", log=tmp_path / f"web{index}.log"))
            wait_healthy(f"http://127.0.0.1:{port}", role)
            replicas.append(role)

        listen = free_port()
        stack.enter_context(nginx(tmp_path / "nginx", site_config(ports, listen)))
        front = f"http://127.0.0.1:{listen}"
        deadline = time.monotonic() + 20
        while True:
            try:
                health = httpx.get(front + "/health", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "nginx did not come up"
                time.sleep(0.1)
        assert health.status_code == 200 and health.json()["status"] == "ok"

        # A stream comes through event by event.
        body = {"model": MODEL, "stream": True,
                "messages": [{"role": "user", "content": "count"}]}
        arrivals = []
        start = time.monotonic()
        with httpx.stream("POST", front + "/v1/chat/completions", json=body, headers=AUTH,
                          timeout=30) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if '"content":"' in line.replace(" ", "") and '"content":""' not in line:
                    arrivals.append(time.monotonic() - start)
        assert len(arrivals) == 5, arrivals
        assert arrivals[-1] - arrivals[0] > 1.8, arrivals  # not held back until the end

        small = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        # A body far over nginx's default 1 MiB limit (base64 images).
        big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 3_000_000}]}
        fake.default = sc.text("big ok")  # and from here on
        answer = httpx.post(front + "/v1/chat/completions", json=big, headers=AUTH, timeout=60)
        assert answer.status_code == 200, answer.text[:500]
        assert answer.json()["choices"][0]["message"]["content"] == "big ok"

        # A rolling restart: replica 0 gets SIGTERM while it streams. It drains, answering
        # requests on the connections nginx keeps open with 503: nginx retries them elsewhere.
        with httpx.Client(timeout=30) as client:
            for _ in range(8):  # open keep-alive connections to both replicas
                assert client.post(front + "/v1/chat/completions", json=small,
                                   headers=AUTH).status_code == 200
            fake.script(sc.slow(sc.text("a b c d e f", chunks=6), chunk_delay=0.5))
            direct = client.stream("POST", f"http://127.0.0.1:{ports[0]}/v1/chat/completions",
                                   json=body, headers=AUTH)
            with direct as stream:
                lines = stream.iter_lines()
                next(line for line in lines if line.startswith("data:"))  # streaming now
                os.kill(replicas[0].pid, signal.SIGTERM)
                time.sleep(0.3)
                statuses = [client.post(front + "/v1/chat/completions", json=small,
                                        headers=AUTH).status_code for _ in range(10)]
                rest = list(lines)
            assert statuses == [200] * 10, statuses
            assert "data: [DONE]" in rest  # the stream in flight finished during the drain
        assert replicas[0].wait(40) == 0, replicas[0].output()
        for _ in range(6):  # replica 0 is gone: connection refused, the next one answers
            assert httpx.get(front + "/health", timeout=10).status_code == 200
