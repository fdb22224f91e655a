"""One stream: our decode loop vs a bare `llama_decode` loop on the same GGUF, and vs
llama-cpp-python's `create_chat_completion` on the shipped Q4_1 file (benchmarks/decode_loop.py).

    python -m pytest benchmarks/test_decode_loop.py --artifact smollm2-135m-instruct
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.conftest import RESULTS

RUNNER = Path(__file__).with_name("decode_loop.py")


def pytest_generate_tests(metafunc):
    from benchmarks.conftest import _manifest

    if "loop_fmt" in metafunc.fixturenames:
        _, manifest = _manifest(metafunc.config)
        have = {a.format for a in manifest.artifacts if a.status != "skipped"}
        wanted = metafunc.config.getoption("--multichat-formats").split(",")
        metafunc.parametrize("loop_fmt", [f for f in wanted if f in have])


def test_decode_loop(benchmark, bench, loop_fmt):
    cmd = [
        sys.executable,
        str(RUNNER),
        "--root",
        str(bench["root"]),
        "--artifact",
        bench["manifest"].name,
        "--format",
        loop_fmt,
        "--new-tokens",
        str(bench["new_tokens"]),
        "--repeats",
        str(bench["repeats"]),
        *(["--threads", str(bench["threads"])] if bench["threads"] else []),
    ]

    def run():
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            pytest.fail(f"decode_loop failed for {loop_fmt}:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    r = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(r)
    RESULTS.setdefault("decode_loop", {})[loop_fmt] = r
    assert r["bare"] > 0 and r["ours"] > 0 and r["ours_sampling"] > 0
