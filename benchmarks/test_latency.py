"""Load time, time to first token, decode speed and memory per format, ours vs the peer."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.conftest import RESULTS, run_script

PROBE = Path(__file__).with_name("probe.py")
NO_PEER = ("lstm",)  # Balabol's own graph with (h, c) state: nothing else runs it


def probe(bench, fmt: str, peer: bool) -> dict:
    args = ("--repeats", str(bench["repeats"]), "--new-tokens", str(bench["new_tokens"]))
    return run_script(PROBE, bench, fmt, *args, *(["--peer"] if peer else []), threads=False)


def test_ours(benchmark, bench, fmt):
    r = benchmark.pedantic(probe, args=(bench, fmt, False), rounds=1, iterations=1)
    benchmark.extra_info.update(r)
    RESULTS["formats"].setdefault(fmt, {})["ours"] = r
    # read by the report at the end: loading a graph here would raise the RSS high-water
    # mark that every later probe process inherits from this one
    m = bench["manifest"]
    RESULTS["formats"][fmt]["path"] = str(bench["root"] / m.name / m.artifact(fmt).path)
    assert r["decode_tps"] > 0 and r["new_tokens"] == bench["new_tokens"]


def test_peer(benchmark, bench, fmt):
    if not bench["peers"]:
        pytest.skip("--no-peers")
    if bench["manifest"].architecture in NO_PEER:
        pytest.skip(f"no library runs a {bench['manifest'].architecture} artifact but ours")
    r = benchmark.pedantic(probe, args=(bench, fmt, True), rounds=1, iterations=1)
    benchmark.extra_info.update(r)
    RESULTS["formats"].setdefault(fmt, {})["peer"] = r
    assert r["decode_tps"] > 0


def test_memory_bandwidth(benchmark):
    """STREAM-like copy: the ceiling for decode, which reads every weight once per token."""
    import time

    import numpy as np

    a = np.ones(64 * 2**20 // 8 * 4, dtype=np.float64)  # 256 MiB
    b = np.empty_like(a)

    def copy():
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            np.copyto(b, a)
            best = min(best, time.perf_counter() - t)
        return 2 * a.nbytes / best / 1e9  # read + write, GB/s

    gbps = benchmark.pedantic(copy, rounds=1, iterations=1)
    benchmark.extra_info["copy_gb_per_s"] = gbps
    RESULTS["bandwidth_gb_s"] = gbps
    assert gbps > 0
