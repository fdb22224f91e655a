"""Several chats at once on one GGUF: today's single stream, ours (a KV state per chat,
batched decode) and llama-server, side by side, with the chats taking turns (roundrobin,
issue #15's scenario) and all sending at once (together); plus the parallel-streams sweep
that sets runtime/loader.py's AUTO_PARALLEL.

    python -m pytest benchmarks/test_multichat.py --artifact smollm2-135m-instruct \
        [--multichat-chats 4,8 --multichat-formats gguf-q4_k_m --llama-server build]

Each number comes from a fresh process (benchmarks/multichat.py); the three contenders of
one (format, chats) run back to back, so a slow spell on the machine hits all of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.conftest import RESULTS, run_script

RUNNER = Path(__file__).with_name("multichat.py")
CONTENDERS = ("baseline", "ours", "llama-server")
# (pattern, contender): the old single stream is measured in the scenario only
CASES = [
    *(("roundrobin", c) for c in CONTENDERS),
    ("together", "ours"),
    ("together", "llama-server"),
]
RESULT_KEY = {"roundrobin": "chats", "together": "together"}  # where report.py reads them


def _formats(config, manifest) -> list[str]:
    have = {a.format for a in manifest.artifacts if a.status != "skipped"}
    return [f for f in config.getoption("--multichat-formats").split(",") if f in have]


def pytest_generate_tests(metafunc):
    from benchmarks.conftest import _manifest

    if "mc_fmt" not in metafunc.fixturenames:
        return
    _, manifest = _manifest(metafunc.config)
    fmts = _formats(metafunc.config, manifest)
    if "contender" in metafunc.fixturenames:
        chats = [int(c) for c in metafunc.config.getoption("--multichat-chats").split(",")]
        cases = [(f, n, p, c) for f in fmts for n in chats for p, c in CASES]
        ids = [f"{f}-{n}chats-{p}-{c}" for f, n, p, c in cases]
        metafunc.parametrize(("mc_fmt", "chats", "pattern", "contender"), cases, ids=ids)
    else:
        metafunc.parametrize("mc_fmt", fmts)


@pytest.fixture(scope="session")
def llama_server(pytestconfig):
    """The llama-server executable, or the reason there is none."""
    from benchmarks import llama_server as ls

    mode = pytestconfig.getoption("--llama-server")
    if mode == "off":
        return None, "--llama-server off"
    if mode == "cached" and not (ls.CACHE / ls.version() / "llama-server").is_file():
        return None, f"not built yet (run `python -m benchmarks.llama_server`); {ls.CACHE}"
    try:
        return ls.binary(), None
    except ls.Unavailable as e:
        return None, str(e)


def run(bench, fmt: str, contender: str, chats: str, *extra: str) -> dict:
    cfg = bench["multichat"]
    return run_script(
        RUNNER,
        bench,
        fmt,
        "--contender",
        contender,
        "--chats",
        chats,
        "--turns",
        str(cfg["turns"]),
        "--new-tokens",
        str(cfg["new_tokens"]),
        *extra,
    )


@pytest.fixture(scope="session")
def mc(bench, pytestconfig):
    bench["multichat"] = {
        "turns": pytestconfig.getoption("--multichat-turns"),
        "new_tokens": pytestconfig.getoption("--multichat-new-tokens"),
    }
    return RESULTS.setdefault("multichat", {"formats": {}, **bench["multichat"]})


def test_multichat(benchmark, bench, mc, llama_server, mc_fmt, chats, pattern, contender):
    extra = ("--pattern", pattern)
    if contender == "llama-server" and not mc_fmt.startswith("gguf"):
        pytest.skip(f"llama-server reads GGUF files, not {mc_fmt}")
    if contender == "llama-server":
        exe, why = llama_server
        if exe is None:
            mc["formats"].setdefault(mc_fmt, {}).setdefault("skipped", why)
            pytest.skip(f"llama-server: {why}")
        extra = (*extra, "--llama-server", str(exe))
    r = benchmark.pedantic(
        run, args=(bench, mc_fmt, contender, str(chats), *extra), rounds=1, iterations=1
    )
    benchmark.extra_info.update(r)
    runs = mc["formats"].setdefault(mc_fmt, {}).setdefault(RESULT_KEY[pattern], {})
    runs.setdefault(str(chats), {})[contender] = r
    assert r["new_tokens"] == chats * mc["turns"] * mc["new_tokens"]
    assert len(r["ttft_p50_ms"]) == mc["turns"] and r["aggregate_tps"] > 0


def test_solo(benchmark, bench, mc, mc_fmt):
    """One chat alone, through ours: the reference for the last turn's TTFT."""
    r = benchmark.pedantic(run, args=(bench, mc_fmt, "solo", "1"), rounds=1, iterations=1)
    mc["formats"].setdefault(mc_fmt, {})["solo"] = r
    assert r["new_tokens"] == mc["turns"] * mc["new_tokens"]


def test_parallel_sweep(benchmark, bench, mc, mc_fmt, pytestconfig):
    """Aggregate decode tokens/s at 1/2/4/8 streams (what AUTO_PARALLEL is set from)."""
    streams = pytestconfig.getoption("--multichat-sweep")
    r = benchmark.pedantic(run, args=(bench, mc_fmt, "sweep", streams), rounds=1, iterations=1)
    mc["formats"].setdefault(mc_fmt, {})["sweep"] = r["streams"]
    assert all(v > 0 for v in r["streams"].values())
