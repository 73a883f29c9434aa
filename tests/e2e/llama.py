"""llama.cpp's `llama-server` with Gemma 3 270M on loopback, for the end-to-end tests.

The binary and the model come from `scripts/llama_server.py` (built once per machine into a
cache outside the checkout; `./scripts/test` runs it before pytest). `llama_build()` reuses
that cache, builds when it is missing, and skips with the script's reason when it cannot;
`IFLOW2API_LLAMA_BUILD=0` skips instead of building.

Gemma 3 270M is a base model: its text is meaningless, so the tests assert protocol and shape.
It has no chat template of its own and Gemma's official one ignores tools, so the server gets
`qwen_xml_tools.jinja`: Gemma turns with Qwen3-Coder's XML tool calls, a form llama.cpp 11434
recognises and builds its tool-call grammar and parser for (it derives none from Gemma turns
with JSON calls).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx
import pytest

from tests.servers import ROOT, free_port

SCRIPT = ROOT / "scripts" / "llama_server.py"
TEMPLATE = Path(__file__).with_name("qwen_xml_tools.jinja")
BUILD_TIMEOUT = 3600  # a first build on two busy cores; later runs read the cache at once
CONTEXT = 2048
MODEL_ALIAS = "gemma-3-270m"


@dataclass(frozen=True)
class LlamaBuild:
    server: Path
    model: Path


def llama_build() -> LlamaBuild:
    """The cached build (building it if missing), or a skip saying why there is none."""
    no_build = os.environ.get("IFLOW2API_LLAMA_BUILD", "1") == "0"
    cmd = [sys.executable, str(SCRIPT), *(["--no-build"] if no_build else [])]
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip(f"llama-server: the build took more than {BUILD_TIMEOUT} s")
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1:] or ["no message"]
        pytest.skip(f"llama-server unavailable: {reason[0]}"
                    + (" (IFLOW2API_LLAMA_BUILD=0)" if no_build else ""))
    ready = json.loads(done.stdout.strip().splitlines()[-1])
    return LlamaBuild(Path(ready["server"]), Path(ready["model"]))


class LlamaServer:
    """`llama-server` on a free loopback port: one slot, a small context, two threads.

    Without `model` it runs in router mode (`--models-dir`), where a request for a model it
    does not have is answered with its "model 'x' not found"."""

    def __init__(self, build: LlamaBuild, *, context: int = CONTEXT, router: bool = False,
                 extra: tuple[str, ...] = ()) -> None:
        self.build = build
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="llama-e2e-"))
        self.log_path = self.home / "llama-server.log"
        args = ["--host", "127.0.0.1", "--port", str(self.port), "--threads", "2",
                "--threads-batch", "2", "--parallel", "1", "--ctx-size", str(context),
                # A server-side cap on every answer, whatever max_tokens a client sends.
                "--n-predict", "256", "--jinja", "--chat-template-file", str(TEMPLATE),
                "--no-warmup", *extra]
        if router:
            models = self.home / "models"
            models.mkdir()
            (models / build.model.name).symlink_to(build.model)
            args += ["--models-dir", str(models), "--no-models-autoload"]
        else:
            args += ["--model", str(build.model), "--alias", MODEL_ALIAS]
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> Self:
        with self.log_path.open("wb") as log:
            # LLAMA_ARG_* from the caller's environment would change the server's options.
            env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_")}
            self.process = subprocess.Popen([str(self.build.server), *self.args], env=env,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited early:\n{self.output()[-4000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama-server did not come up in {timeout} s:\n{self.output()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no goodbye on open connections."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Self:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
