"""Where and how long a `balabol train` run goes: the device plan (GPU in fp16/bf16, else the
CPU in fp32 with gradient accumulation so the effective batch is the same), the schedule of
optimizer steps, and the one measured step the time and memory estimate comes from.

    balabol train --data data/me --device cpu --batch-size 16 --micro-batch-size 4

torch is imported inside the functions that need it.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from balabol.errors import ConfigError
from training import dataset
from training.config import CPU_MICRO_BATCH, EVALS_PER_RUN, WARMUP_FRACTION, RunConfig


@dataclass(frozen=True)
class Plan:
    """Where and how the steps run."""

    device: str  # cpu | cuda
    precision: str  # fp32 | fp16 | bf16
    micro_batch: int
    accumulation: int
    gpu_name: str = ""

    def describe(self) -> str:
        where = f"GPU {self.gpu_name}" if self.device == "cuda" else "CPU"
        return (
            f"{where}, {self.precision}, {self.micro_batch} sequences x "
            f"{self.accumulation} accumulation steps per optimizer step"
        )


def plan_device(cfg: RunConfig) -> Plan:
    import torch

    cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not cuda:
        raise ConfigError("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
    if cfg.device == "cpu" or not cuda:
        micro = cfg.micro_batch_size or math.gcd(cfg.batch_size, CPU_MICRO_BATCH)
        return Plan("cpu", "fp32", micro, cfg.batch_size // micro)
    # bf16 needs Ampere (compute capability 8); a T4 (7.5) only emulates it, slowly.
    precision = "bf16" if torch.cuda.get_device_capability()[0] >= 8 else "fp16"
    micro = cfg.micro_batch_size or cfg.batch_size
    return Plan("cuda", precision, micro, cfg.batch_size // micro, torch.cuda.get_device_name())


@dataclass(frozen=True)
class Schedule:
    steps: int  # optimizer steps
    epochs: float
    eval_every: int
    warmup: int


def steps_per_epoch(n_samples: int, plan: Plan) -> int:
    """As the HF Trainer counts them (a last partial accumulation still makes a step)."""
    return max(math.ceil(math.ceil(n_samples / plan.micro_batch) / plan.accumulation), 1)


def schedule(cfg: RunConfig, n_train: int, plan: Plan) -> Schedule:
    per_epoch = steps_per_epoch(n_train, plan)
    steps = cfg.max_steps or math.ceil(per_epoch * cfg.epochs)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(WARMUP_FRACTION * steps)
    return Schedule(
        steps, steps / per_epoch, cfg.eval_every or max(1, steps // EVALS_PER_RUN), warmup
    )


def peak_memory(device: str) -> int:
    """Peak bytes so far: the GPU's allocator on CUDA, the process's max RSS on the CPU."""
    if device == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux


def probe(model, samples: Sequence[dataset.Encoded], plan: Plan, pad_id: int) -> float:
    """Seconds per token of one forward+backward on a micro-batch of the longest samples."""
    import torch

    longest = sorted(samples, key=lambda s: len(s.input_ids))[-plan.micro_batch :]
    dev = next(p.device for p in model.parameters())
    amp = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(plan.precision)

    def step(batch) -> float:
        batch = {k: v.to(dev) for k, v in batch.items()}
        t = time.perf_counter()
        with torch.autocast(plan.device, dtype=amp or torch.float32, enabled=amp is not None):
            loss = model(**batch).loss
        loss.backward()
        if plan.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    model.train()
    step(dataset.collate(longest[:1], pad_id))  # warm-up: allocations, kernel choice
    seconds = step(dataset.collate(longest, pad_id))
    model.zero_grad(set_to_none=True)
    return seconds / (len(longest) * len(longest[-1].input_ids))
