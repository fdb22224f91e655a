"""Training throughput: LoRA on the artifact's hf/ model, `balabol train`'s batches
(length-grouped), the same packed into rows with block-diagonal attention (`--packing`),
and random batches padded to their longest sample (a plain Trainer run), side by side on
the same data (issue #4).

    make bench                                     # part of the suite
    python -m pytest benchmarks/test_training.py --artifact NAME --train-samples 96

Each run is `balabol train` in a fresh process for exactly one epoch, so every real
(non-padding) token is seen once and real tokens/s = tokens in the data / training time,
whatever the batch order. Peak memory is that process's maximum resident set.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.conftest import RESULTS

BATCH = 4  # sequences per optimizer step, no accumulation: the same for both runs
MODES = {
    "grouped": [],  # the default: batches of similar length, padded to their longest
    "packed": ["--packing"],  # grouped, each micro-batch packed into rows
    "random": ["--no-length-grouping"],  # a plain padded Trainer run
}


def write_data(out: Path, n: int, seed: int = 0) -> Path:
    """n chat samples whose replies are 1 to 12 consecutive sentences of the shipped texts:
    lengths from ~20 to ~400 tokens, as in real chats, where padding costs the most."""
    from export.parity import text

    sentences = [
        s
        for name in ("heldout_en.txt", "calibration_en.txt")
        for s in re.split(r"(?<=[.!?])\s+", text(name).replace("\n", " "))
        if s.strip()
    ]
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n), ("val", 2)):
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for i in range(count):
                start, k = rng.randrange(len(sentences)), rng.randint(1, 12)
                reply = " ".join(sentences[(start + j) % len(sentences)] for j in range(k))
                msgs = [
                    {"role": "user", "content": f"Tell me about part {i} of the story."},
                    {"role": "assistant", "content": reply},
                ]
                f.write(json.dumps({"messages": msgs, "session": f"{split}-{i}"}) + "\n")
    return out


def train_once(base: Path, data: Path, out: Path, mode: str, n: int) -> dict:
    cmd = [
        *(str(Path(sys.executable).parent / "balabol"), "train"),
        *("--base", str(base), "--data", str(data), "--name", mode),
        *("--out-dir", str(out), "--max-steps", str(n // BATCH), "--batch-size", str(BATCH)),
        *("--micro-batch-size", str(BATCH), "--eval-every", str(n), "--max-length", "512"),
        *("--device", "cpu", "--force", *MODES[mode]),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    metrics = json.loads((out / mode / "metrics.json").read_text())
    return {
        "real_tokens_per_second": metrics["train_tokens_per_second"],
        "train_seconds": metrics["train_seconds"],
        "tokens": metrics["data"]["train"]["tokens"],
        "peak_memory_mb": round(metrics["peak_memory_bytes"] / 2**20),
        "steps": metrics["steps"],
    }


def test_training_throughput(bench, pytestconfig, tmp_path):
    manifest = bench["manifest"]
    if manifest.architecture not in ("llama", "gpt2", "gemma3"):
        pytest.skip(f"LoRA needs a transformers model; {manifest.architecture} has none")
    n = pytestconfig.getoption("--train-samples")
    base = bench["root"] / manifest.name / "hf"
    data = write_data(tmp_path / "data", n)
    runs = {mode: train_once(base, data, tmp_path / "adapters", mode, n) for mode in MODES}
    assert runs["packed"]["tokens"] == runs["grouped"]["tokens"] == runs["random"]["tokens"] > 0
    RESULTS["training"] = {
        "samples": n,
        "batch": BATCH,
        **runs,
        "speedup": round(
            runs["grouped"]["real_tokens_per_second"] / runs["random"]["real_tokens_per_second"], 3
        ),
    }
