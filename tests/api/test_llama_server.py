"""`--format remote` against llama-cpp-python's own OpenAI-compatible server
(`python -m llama_cpp.server`) on the same GGUF file: the same greedy reply as the runtime's
own gguf backend, so a user moving generation to llama.cpp's servers gets the model they had.

The file is the embedded SmolLM2's shipped GGUF (slow: the base is imported once): a random
tiny model emits lone byte tokens, which llama-cpp-python drops from its text where the
runtime shows U+FFFD, so only a real model's reply compares as text."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from balabol import bases
from runtime.base import GenerationConfig
from runtime.gguf_backend import GgufBackend
from runtime.remote_backend import RemoteBackend
from runtime.tokenizer import Tokenizer

pytest.importorskip("sse_starlette", reason="llama-cpp-python[server] is in the dev extra")
pytestmark = pytest.mark.slow

STARTUP = 120  # seconds for the server to load the model (a busy CI machine)
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
GGUF = bases.EMBEDDED["smollm2-135m-instruct"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"llama_cpp.server exited: {proc.stdout.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                json.load(r)
                return
        except OSError:
            time.sleep(0.2)  # not listening yet
    raise AssertionError(f"llama_cpp.server did not answer within {STARTUP} s")


@pytest.fixture(scope="module")
def llama_server():
    gguf = GGUF.gguf_path()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "1024", "--n_threads", "2", "--verbose", "false",
         # as the runtime's engine runs it (llama.cpp's default, where the CPU has it): the
         # attention kernel changes the logits' last digits, and a near tie with them
         "--flash_attn", "true"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_up(proc, url)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_remote_on_llama_cpp_server_equals_the_local_gguf_backend(llama_server):
    local = GgufBackend.open(
        GGUF.gguf_path(),
        tokenizer=Tokenizer(bases.resolve("default")),
        context_length=1024,
        fmt="gguf-q4_1",
        threads=2,
    )
    remote = RemoteBackend(llama_server)
    try:
        for n in (8, 32):  # cut by the length limit, and a reply that ends on its own
            config = GenerationConfig.greedy(n)
            want = local.generate(MESSAGES, config)
            assert want.strip() and "\ufffd" not in want
            assert remote.generate(MESSAGES, config) == want
            assert remote.last_stats.stopped_by == local.last_stats.stopped_by
    finally:
        local.close()
