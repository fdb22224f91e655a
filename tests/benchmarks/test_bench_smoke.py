"""The benchmark suite runs end to end on the tiny model (one round), so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_bench_smoke(exported_llama, tmp_path):
    root, manifest = exported_llama
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(REPO / "benchmarks"),
        "-q",
        "-p",
        "no:cacheprovider",
        "--artifacts-dir",
        str(root),
        "--artifact",
        "llama",
        "--bench-repeats",
        "1",
        "--bench-new-tokens",
        "48",
        "--bench-results",
        str(out),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    (data,) = [json.loads(p.read_text()) for p in out.glob("2*.json")]
    assert [r["format"] for r in data["table"]] == [a.format for a in manifest.artifacts]
    for row in data["table"]:
        assert row["decode_tps"] > 0 and row["peer_decode_tps"] > 0 and row["ppl"] > 1
    assert data["bandwidth_gb_s"] > 0
    md = (out / "latest.md").read_text()
    assert "| gguf-q4_k_m |" in md and "llama-cpp-python" in md
    assert (out / "latest.png").read_bytes()[:4] == b"\x89PNG"
