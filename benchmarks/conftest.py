"""Benchmarks of one exported artifact, every format, against the libraries they wrap.

    make bench ARTIFACT=smollm2-135m-instruct
    python -m pytest benchmarks --artifact NAME [--bench-repeats 3] [--no-peers]

Each speed/memory number comes from a fresh process (benchmarks/probe.py); quality is
perplexity on balabol/texts/heldout_en.txt. At the end, benchmarks/report.py writes
results/<timestamp>.json, a markdown table and a PNG chart (see README).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from balabol.manifest import Manifest
from balabol.settings import DEFAULT_ARTIFACT, artifacts_dir

RESULTS: dict = {"formats": {}}


def pytest_addoption(parser):
    g = parser.getgroup("balabol benchmarks")
    g.addoption("--artifact", default=DEFAULT_ARTIFACT, help="artifact name")
    g.addoption("--artifacts-dir", default=None, help="artifacts root (default ./artifacts)")
    g.addoption("--bench-repeats", type=int, default=3, help="repeats per timing (median)")
    g.addoption("--bench-new-tokens", type=int, default=128, help="tokens for decode speed")
    g.addoption("--bench-results", default=str(Path(__file__).parent / "results"))
    g.addoption("--no-peers", action="store_true", help="skip the peer libraries")
    g.addoption("--train-samples", type=int, default=96, help="samples per training run")
    g.addoption("--bench-threads", type=int, default=0, help="threads per model (0 = all cores)")
    g.addoption("--multichat-chats", default="4,8", help="chats talking at once, per run")
    g.addoption("--multichat-turns", type=int, default=6, help="turns per chat")
    g.addoption("--multichat-new-tokens", type=int, default=48, help="tokens per reply")
    g.addoption(
        "--multichat-formats",
        default="gguf-q4_k_m,onnx-int8",
        help="formats, comma-separated (llama-server runs the gguf ones)",
    )
    g.addoption("--multichat-sweep", default="1,2,4,8", help="parallel streams to measure")
    g.addoption(
        "--llama-server",
        choices=("build", "cached", "off"),
        default="build",
        help="the multi-chat peer: build it if needed (minutes, once), use it only if built, or skip",
    )


def _manifest(config) -> tuple[Path, Manifest]:
    root = Path(config.getoption("--artifacts-dir") or artifacts_dir())
    name = config.getoption("--artifact")
    if not (root / name / "manifest.json").is_file():
        pytest.exit(f"no artifact {name!r} in {root}: run `make export` first", returncode=2)
    return root, Manifest.load(root / name)


def run_script(script: Path, bench: dict, fmt: str, *args: str, threads: bool = True) -> dict:
    """A benchmark script run in a fresh process on the bench's artifact and `fmt` (a
    process's memory high-water mark is its own); the JSON of its last stdout line."""
    cmd = [
        sys.executable,
        str(script),
        "--root",
        str(bench["root"]),
        "--artifact",
        bench["manifest"].name,
        "--format",
        fmt,
        *args,
        *(["--threads", str(bench["threads"])] if threads and bench["threads"] else []),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(f"{script.name} {' '.join(args)} failed for {fmt}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def pytest_generate_tests(metafunc):
    if "fmt" in metafunc.fixturenames:
        _, manifest = _manifest(metafunc.config)
        fmts = [a.format for a in manifest.artifacts if a.status != "skipped"]
        metafunc.parametrize("fmt", fmts)


@pytest.fixture(scope="session")
def bench(pytestconfig):
    root, manifest = _manifest(pytestconfig)
    RESULTS.update(artifact=manifest.name, root=str(root), manifest=manifest)
    return {
        "root": root,
        "manifest": manifest,
        "repeats": pytestconfig.getoption("--bench-repeats"),
        "new_tokens": pytestconfig.getoption("--bench-new-tokens"),
        "peers": not pytestconfig.getoption("--no-peers"),
        "threads": pytestconfig.getoption("--bench-threads") or None,
    }


def pytest_collection_modifyitems(session, config, items):
    """Each format's probe runs right next to its peer's (ours, peer, next format ...), so a
    slow spell on the machine hits both sides of a ratio, not one."""
    fmt_of = {id(i): i.callspec.params.get("fmt") for i in items if hasattr(i, "callspec")}
    latency = [i for i in items if i.module.__name__.endswith("test_latency") and fmt_of.get(id(i))]
    if not latency:
        return
    first = items.index(latency[0])
    order = list(dict.fromkeys(fmt_of[id(i)] for i in latency))
    latency.sort(key=lambda i: (order.index(fmt_of[id(i)]), i.originalname != "test_ours"))
    rest = [i for i in items if i not in latency]
    items[:] = rest[:first] + latency + rest[first:]


def pytest_sessionfinish(session, exitstatus):
    ran = (
        RESULTS["formats"]
        or RESULTS.get("training")
        or RESULTS.get("multichat")
        or RESULTS.get("decode_loop")
    )
    if ran and "manifest" in RESULTS:
        from benchmarks.report import write

        out = Path(session.config.getoption("--bench-results"))
        paths = write(RESULTS, out)
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line("")
            tr.write_line(paths["markdown"].read_text())
            tr.write_line(f"written: {', '.join(str(p) for p in paths.values())}")
