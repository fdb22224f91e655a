"""One stream: our decode loop vs a bare `llama_decode` loop on the same GGUF, and vs
llama-cpp-python's `create_chat_completion` on the shipped Q4_1 file (benchmarks/decode_loop.py).

    python -m pytest benchmarks/test_decode_loop.py --artifact smollm2-135m-instruct
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.conftest import RESULTS, run_script

RUNNER = Path(__file__).with_name("decode_loop.py")


def pytest_generate_tests(metafunc):
    from benchmarks.conftest import _manifest

    if "loop_fmt" in metafunc.fixturenames:
        _, manifest = _manifest(metafunc.config)
        have = {a.format for a in manifest.artifacts if a.status != "skipped"}
        wanted = metafunc.config.getoption("--multichat-formats").split(",")
        # the bare loop is llama.cpp's own: GGUF files only
        metafunc.parametrize("loop_fmt", [f for f in wanted if f in have and f.startswith("gguf")])


def test_decode_loop(benchmark, bench, loop_fmt):
    args = ("--new-tokens", str(bench["new_tokens"]), "--repeats", str(bench["repeats"]))

    def run():
        return run_script(RUNNER, bench, loop_fmt, *args)

    r = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(r)
    RESULTS.setdefault("decode_loop", {})[loop_fmt] = r
    assert r["bare"] > 0 and r["ours"] > 0 and r["ours_sampling"] > 0
