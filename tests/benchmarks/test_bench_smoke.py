"""The benchmark suite runs end to end on the tiny model (one round), so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def bench(root: Path, artifact: str, out: Path) -> subprocess.CompletedProcess:
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
        artifact,
        "--bench-repeats",
        "1",
        "--bench-new-tokens",
        "48",
        "--bench-results",
        str(out),
        "--train-samples",
        "8",
        # the multi-chat suite in miniature; llama-server only if someone built it already
        "--multichat-chats",
        "2",
        "--multichat-turns",
        "2",
        "--multichat-new-tokens",
        "4",
        "--multichat-sweep",
        "1,2",
        "--llama-server",
        "cached",
        "--bench-threads",
        "1",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)


def test_bench_smoke(exported_llama, tmp_path):
    root, manifest = exported_llama
    out = tmp_path / "results"
    run = bench(root, "llama", out)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    (data,) = [json.loads(p.read_text()) for p in out.glob("2*.json")]
    assert [r["format"] for r in data["table"]] == [a.format for a in manifest.artifacts]
    for row in data["table"]:
        assert row["decode_tps"] > 0 and row["peer_decode_tps"] > 0 and row["ppl"] > 1
    assert data["bandwidth_gb_s"] > 0
    md = (out / "latest.md").read_text()
    assert "| gguf-q4_k_m |" in md and "llama-cpp-python" in md
    assert (out / "latest.png").read_bytes()[:4] == b"\x89PNG"
    shapes = data["training"]["shapes"]
    assert set(shapes) == {"uniform", "chat"}
    for runs in shapes.values():
        assert runs["packed"]["tokens"] == runs["grouped"]["tokens"] == runs["random"]["tokens"]
        assert [runs[m]["steps"] for m in ("packed", "grouped", "random")] == [2, 2, 2]
        assert runs["packed"]["padding"] == 0 < runs["random"]["padding"]
        assert runs["speedup"] > 0 and runs["grouped_speedup"] > 0
    assert "- chat data (" in md and "| uniform | packed, one row per batch (default) |" in md
    # the multi-chat suite and the decode-loop comparison, in miniature
    fmt = data["multichat"]["formats"]["gguf-q4_k_m"]
    runs = fmt["chats"]["2"]  # round robin, the scenario
    assert {"baseline", "ours"} <= set(runs) and set(fmt["together"]["2"]) >= {"ours"}
    for r in [*runs.values(), *fmt["together"]["2"].values()]:
        assert r["new_tokens"] == 2 * 2 * 4 and len(r["ttft_p50_ms"]) == 2
        assert r["aggregate_tps"] > 0 and r["peak_rss_mb"] > 0
    assert (runs["ours"]["pattern"], fmt["together"]["2"]["ours"]["pattern"]) == (
        "roundrobin",
        "together",
    )
    assert fmt["solo"]["new_tokens"] == 2 * 4
    assert set(fmt["sweep"]) == {"1", "2"}
    assert set(data["multichat_targets"]["gguf-q4_k_m"]) >= {"ttft_vs_solo", "tps_vs_single"}
    loop = data["decode_loop"]["gguf-q4_k_m"]
    assert loop["bare"] > 0 and loop["ours"] > 0 and loop["ours_sampling"] > 0
    ours = "Balabol: parallel = chats, a KV state per chat"
    assert f"| gguf-q4_k_m | 2 | round robin | {ours} |" in md
    assert f"| gguf-q4_k_m | 2 | together | {ours} |" in md
    assert "| gguf-q4_k_m | 2 | round robin | one stream, no KV state kept (before #15) |" in md
    assert "bare `llama_decode` loop" in md


def test_bench_rows_for_an_lstm(exported_lstm, tmp_path):
    """A row per format of the LSTM baseline; no peer library runs it, so no peer numbers."""
    root, manifest = exported_lstm
    out = tmp_path / "results"
    run = bench(root, "lstm", out)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    (data,) = [json.loads(p.read_text()) for p in out.glob("2*.json")]
    assert [r["format"] for r in data["table"]] == ["torch", "onnx", "onnx-int8"]
    assert {a.format for a in manifest.artifacts if a.status == "skipped"} == {
        "gguf-f16",
        "gguf-q8_0",
        "gguf-q4_k_m",
        "gguf-q4_0",
    }
    for row in data["table"]:
        assert row["decode_tps"] > 0 and row["ppl"] > 1
        assert (row["peer"], row["peer_decode_tps"]) == ("none", None)
    assert "| onnx-int8 |" in (out / "latest.md").read_text()
