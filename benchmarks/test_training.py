"""Training throughput: LoRA on the artifact's hf/ model with `balabol train`'s batches
(packed: each batch one row, no padding), length-grouped padded batches, and random
batches padded to their longest sample (what a plain Trainer run does), side by side on
the same data (issue #4), for two shapes of data: "uniform" lengths and a made-up
Telegram "chat" (see write_chat_data).

    make bench                                     # part of the suite
    python -m pytest benchmarks/test_training.py --artifact NAME --train-samples 96

Each run is `balabol train` in a fresh process for exactly one epoch, so every real
(non-padding) token is seen once and real tokens/s = tokens in the data / training time,
whatever the batch order. "padding" is the share of the positions computed over that
were padding, counted in the run. Peak memory is that process's maximum resident set.
"""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.conftest import RESULTS

BATCH = 4  # sequences per optimizer step, no accumulation: the same for every run
BALABOL = str(Path(sys.executable).parent / "balabol")
MODES = ("packed", "grouped", "random")  # `balabol train --batching MODE`; packed is the default


def _texts() -> str:
    from export.parity import text

    return " ".join(text(name) for name in ("heldout_en.txt", "calibration_en.txt"))


def write_data(out: Path, n: int, seed: int = 0) -> Path:
    """The "uniform" data: n chat samples whose replies are 1 to 12 consecutive sentences of the
    shipped texts, lengths spread evenly from ~20 to ~400 tokens."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", _texts().replace("\n", " ")) if s.strip()]
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


def write_chat_data(out: Path, n: int, seed: int = 0) -> Path:
    """The "chat" data: a two-person Telegram export made up here, through `balabol data telegram`.
    Assumed shape, not measured from a real chat: message lengths log-normal (median 6
    words, sigma 1, at most 200; consecutive words of the shipped texts), a new sender for
    60% of messages, a pause of 3-48 h before 8% of them (a new session). The importer
    merges each side's messages into turns and cuts windows of up to 8 turns, so samples
    run from a short exchange to a long multi-turn window."""
    words = _texts().split()
    rng = random.Random(seed)
    t, who, messages = 1_700_000_000, 0, []
    for i in range(16 * n + 200):  # ~1.3 train samples per 16 messages: room to spare
        pause = (
            rng.randint(3 * 3600, 48 * 3600) if rng.random() < 0.08 else 5 + rng.expovariate(1 / 90)
        )
        t += int(pause)
        who = 1 - who if rng.random() < 0.6 else who
        k = max(1, min(200, round(rng.lognormvariate(math.log(6), 1.0))))
        start = rng.randrange(len(words))
        name = ("Ann", "Bob")[who]
        messages.append(
            {
                "id": i + 1,
                "type": "message",
                "date_unixtime": str(t),
                "from": name,
                "from_id": f"user{who + 1}",
                "text": " ".join(words[(start + j) % len(words)] for j in range(k)),
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    export = out / "result.json"
    export.write_text(
        json.dumps({"name": "Bob", "type": "personal_chat", "id": 2, "messages": messages})
    )
    cmd = [BALABOL, "data", "telegram", "--input", str(export), "--persona", "Ann"]
    subprocess.run([*cmd, "--name", "chat", "--out-dir", str(out)], check=True, capture_output=True)
    data = out / "chat"
    train = (data / "train.jsonl").read_text().splitlines()
    assert len(train) >= n, f"the made-up chat gave {len(train)} train samples, {n} wanted"
    (data / "train.jsonl").write_text("\n".join(train[:n]) + "\n")
    val = (data / "val.jsonl").read_text().splitlines()
    (data / "val.jsonl").write_text("\n".join(val[:2]) + "\n")
    return data


DATA = {"uniform": write_data, "chat": write_chat_data}


def train_once(base: Path, data: Path, out: Path, mode: str, n: int) -> dict:
    cmd = [
        *(BALABOL, "train"),
        *("--base", str(base), "--data", str(data), "--name", mode),
        *("--out-dir", str(out), "--max-steps", str(n // BATCH), "--batch-size", str(BATCH)),
        *("--micro-batch-size", str(BATCH), "--eval-every", str(n), "--max-length", "512"),
        *("--device", "cpu", "--force", "--batching", mode),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    metrics = json.loads((out / mode / "metrics.json").read_text())
    return {
        "real_tokens_per_second": metrics["train_tokens_per_second"],
        "train_seconds": metrics["train_seconds"],
        "tokens": metrics["data"]["train"]["tokens"],
        "target_tokens": metrics["data"]["train"]["target_tokens"],
        "padding": metrics["padding_fraction"],
        "peak_memory_mb": round(metrics["peak_memory_bytes"] / 2**20),
        "steps": metrics["steps"],
    }


def test_training_throughput(bench, pytestconfig, tmp_path):
    manifest = bench["manifest"]
    if manifest.architecture not in ("llama", "gpt2", "gemma3"):
        pytest.skip(f"LoRA needs a transformers model; {manifest.architecture} has none")
    n = pytestconfig.getoption("--train-samples")
    base = bench["root"] / manifest.name / "hf"
    shapes = {}
    for shape, write in DATA.items():
        data = write(tmp_path / shape, n)
        out = tmp_path / f"adapters-{shape}"
        runs = {mode: train_once(base, data, out, mode, n) for mode in MODES}
        assert len({r["tokens"] for r in runs.values()}) == 1 and runs["random"]["tokens"] > 0
        plain = runs["random"]["real_tokens_per_second"]
        shapes[shape] = {
            **runs,
            "speedup": round(runs["packed"]["real_tokens_per_second"] / plain, 3),
            "grouped_speedup": round(runs["grouped"]["real_tokens_per_second"] / plain, 3),
        }
    RESULTS["training"] = {"samples": n, "batch": BATCH, "shapes": shapes}
