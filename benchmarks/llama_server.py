"""llama-server, the peer of the multi-chat benchmark: built once from the llama.cpp sources
inside the llama-cpp-python sdist (the version our runtime links), run on 127.0.0.1.

    python -m benchmarks.llama_server            # build (minutes, niced) and print the path

Benchmark-only: nothing here is installed or run in CI. The sdist is fetched with pip (the
package registry), unpacked and built into ~/.cache/balabol/llama-server/<version>/; later
runs reuse the binary. When it cannot be built (no cmake, no compiler, no registry),
`binary()` raises `Unavailable` with the reason, and the benchmark skips the peer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path

DEFAULT_VERSION = "0.3.36"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "balabol" / "llama-server"
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    # the web UI would be fetched from a Hugging Face bucket at build time: not needed here
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)


class Unavailable(RuntimeError):
    """llama-server cannot be built or started here; the message says why."""


def version() -> str:
    """The llama-cpp-python version installed (so both sides run the same llama.cpp)."""
    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return DEFAULT_VERSION


def binary(ver: str | None = None, *, cache: Path = CACHE, log=print) -> Path:
    """The llama-server executable for llama-cpp-python `ver`, built on first use."""
    ver = ver or version()
    home = cache / ver
    exe = home / "llama-server"
    if exe.is_file():
        return exe
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} is not installed; llama-server cannot be built")
    home.mkdir(parents=True, exist_ok=True)
    # sources and build tree stay in the cache, so an interrupted build resumes where it was
    src = home / "src" / "vendor" / "llama.cpp"
    if not (src / "CMakeLists.txt").is_file():
        _sources(ver, home, log)
    build = home / "build"
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    jobs = str(min(2, os.cpu_count() or 1))  # the machine is shared
    log(f"building llama-server {ver} in {build} (minutes, niced) ...")
    for cmd in (
        [*nice, "cmake", "-S", str(src), "-B", str(build), *CMAKE_FLAGS],
        [*nice, "cmake", "--build", str(build), "--target", "llama-server", "-j", jobs],
    ):
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise Unavailable(f"`{' '.join(cmd)}` failed:\n{run.stderr[-2000:]}")
    built = next((p for p in build.rglob("llama-server") if p.is_file()), None)
    if built is None:
        raise Unavailable(f"the build finished but no llama-server under {build}")
    shutil.copy2(built, exe)
    shutil.rmtree(home / "src", ignore_errors=True)  # ~0.5 GB with the build: only the binary stays
    shutil.rmtree(build, ignore_errors=True)
    return exe


def _sources(ver: str, home: Path, log) -> None:
    """Download the sdist with pip and unpack it as home/src (its vendor/llama.cpp is built)."""
    log(f"downloading the llama-cpp-python {ver} sdist ...")
    with tempfile.TemporaryDirectory(dir=home) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            # the sdist of this package only: `:all:` would also build pip's build tools from
            # source (setuptools and friends, recursively), for minutes
            "--no-binary",
            "llama-cpp-python",
            "--no-deps",
            f"llama-cpp-python=={ver}",
            "-d",
            tmp,
        ]
        run = subprocess.run(cmd, capture_output=True, text=True)
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"), None)
        if run.returncode != 0 or sdist is None:
            raise Unavailable(
                f"pip could not download llama-cpp-python=={ver}: {run.stderr[-1000:]}"
            )
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        top = next(Path(tmp).glob("llama_cpp_python-*/"), None)
        if top is None or not (top / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file():
            raise Unavailable(f"{sdist.name} holds no vendor/llama.cpp")
        shutil.rmtree(home / "src", ignore_errors=True)
        top.rename(home / "src")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(model: Path, *, parallel: int, n_ctx_per_slot: int, threads: int, exe: Path):
    """A running llama-server on 127.0.0.1 (its base URL); stopped on exit.

    -np slots, each with n_ctx_per_slot cells (llama-server splits --ctx-size between them);
    --cont-batching is its default; the web UI is off."""
    port = free_port()
    cmd = [
        str(exe),
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--parallel",
        str(parallel),
        "--ctx-size",
        str(n_ctx_per_slot * parallel),
        "--threads",
        str(threads),
        "--threads-batch",
        str(threads),
        "--batch-size",
        "512",
        "--no-webui",
    ]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while not _healthy(url):
                if proc.poll() is not None:
                    log.seek(0)
                    raise Unavailable(
                        f"llama-server exited ({proc.returncode}): {log.read()[-1500:]}"
                    )
                if time.monotonic() > deadline:
                    raise Unavailable("llama-server did not become healthy in 120 s")
                time.sleep(0.2)
            yield url, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:  # 503 while loading
            return json.load(r).get("status") == "ok"
    except OSError:
        return False


if __name__ == "__main__":
    print(binary())
