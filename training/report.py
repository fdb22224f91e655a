"""What a `balabol train` run reports: the numbers of metrics.json (losses, the step kept,
time, tokens per second, padding, memory) and the one-screen summary printed at the end.

    balabol train --data data/me --max-steps 200   # ends with the summary; metrics.json beside

Stdlib only; the Trainer is passed in.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

from training.plan import Plan, Schedule, peak_memory


def run_metrics(
    trainer,
    sched: Schedule,
    plan: Plan,
    resume_step: int | None,
    train_stats,
    val_stats,
    *,
    t_start: float,
    train_seconds: float,
    estimate: float,
    peak: int,
) -> dict[str, Any]:
    """The numbers every `balabol train --arch` writes to metrics.json."""
    state = trainer.state
    done_epochs = (state.epoch or 0.0) - sched.epochs * (resume_step or 0) / sched.steps
    return {
        **history(state.log_history),
        "steps": state.global_step,
        "epochs": round(state.epoch or 0.0, 4),
        "resumed_from_step": resume_step,
        "seconds": round(time.perf_counter() - t_start, 2),
        "train_seconds": round(train_seconds, 2),
        "seconds_per_step": round(
            train_seconds / max(state.global_step - (resume_step or 0), 1), 4
        ),
        "train_tokens_per_second": round(train_stats.tokens * done_epochs / train_seconds, 1),
        **padding(trainer),
        "estimate_seconds": round(estimate, 2),
        "peak_memory_bytes": peak_memory(plan.device),
        "estimated_peak_memory_bytes": peak,
        "device": dataclasses.asdict(plan),
        "data": {"train": train_stats.as_dict(), "val": val_stats.as_dict()},
    }


def padding(trainer) -> dict[str, Any]:
    """The token positions this run's training steps computed over (padding included) and
    the share of them that was padding, for a trainer that counts them."""
    processed = getattr(trainer, "processed_tokens", 0)
    if not processed:
        return {}
    return {
        "train_tokens_processed": processed,
        "padding_fraction": round(1 - trainer.real_tokens / processed, 4),
    }


def history(log_history: list[dict]) -> dict[str, Any]:
    """Train and val losses from the Trainer's log, and the step whose weights are kept."""
    evals = [
        {"step": h["step"], "loss": h["eval_loss"], "perplexity": ppl(h["eval_loss"])}
        for h in log_history
        if "eval_loss" in h
    ]
    best = min(evals, key=lambda e: e["loss"]) if evals else None
    return {
        "train_loss": [
            {"step": h["step"], "loss": h["loss"], "lr": h.get("learning_rate")}
            for h in log_history
            if "loss" in h
        ],
        "eval": evals,
        "best": best,
        "kept": f"step {best['step']} (lowest val loss)" if best else "the last step",
    }


def ppl(loss: float) -> float:
    return round(math.exp(min(loss, 50.0)), 4)


def size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def duration(s: float) -> str:
    s = round(s)
    return f"{s // 3600} h {s % 3600 // 60} min" if s >= 3600 else f"{s // 60} min {s % 60} s"


def summary(cfg, m: dict, *, what: str, next_cmd: str) -> str:
    """The end of a run on one screen: where it went, the kept step, losses, time, memory,
    and the command to run next."""
    best = m["best"]
    rows = [
        (what, str(cfg.out)),
        ("steps", f"{m['steps']} ({m['epochs']} epochs)"),
        ("kept", m["kept"]),
        ("val loss / ppl", f"{best['loss']:.4f} / {best['perplexity']:.2f}" if best else "-"),
        ("last train loss", f"{m['train_loss'][-1]['loss']:.4f}" if m["train_loss"] else "-"),
        (
            "time",
            f"{duration(m['train_seconds'])} ({m['seconds_per_step']:.3f} s/step, "
            f"estimated {duration(m['estimate_seconds'])})",
        ),
        (
            "tokens/s",
            f"{m['train_tokens_per_second']:.0f}"
            + (
                f" ({m['padding_fraction']:.0%} of the work on padding)"
                if "padding_fraction" in m
                else ""
            ),
        ),
        (
            "peak memory",
            f"{size(m['peak_memory_bytes'])} (estimated {size(m['estimated_peak_memory_bytes'])})",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(["", *lines, "", f"next: {next_cmd}"])
