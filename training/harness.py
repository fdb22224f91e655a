"""The one training sequence every `balabol train --arch` runs (`train_and_save`); each
architecture brings only its tokenizer and model (a `Recipe`: training/lora.py for LoRA,
training/baselines/common.py for the scratch models).

    balabol train --data data/me --name me            # LoRA   -> adapters/me/
    balabol train --arch lstm --data data/jokes       # scratch -> models/jokes/

The story of `train_and_save`, after the architecture has checked its inputs
(`check_output` first: nothing is loaded or written if that fails) and made its tokenizer:
 1. encode the splits with the chat format, labels on assistant replies only;
 2. plan the device and the schedule (training/plan.py);
 3. build the model (seeded) through the recipe;
 4. measure one step on the longest samples and print the time and peak-memory estimate;
 5. train with the HF Trainer (training/trainer.py), checkpoints in OUT_DIR/.NAME.train/
    (an interrupted run resumes from the last one);
 6. write the best weights, the tokenizer and chat template, the config and the metrics
    into a temporary directory renamed to OUT_DIR/NAME/ only when complete.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from balabol.errors import ConfigError, DataError
from balabol.files import replacing_dir
from balabol.prompt import CHAT_TEMPLATE, template_sha256
from training import dataset
from training.config import CHAT_TEMPLATE_FILE, CONFIG_FILE, METRICS_FILE, RunConfig
from training.plan import Plan, peak_memory, plan_device, probe, schedule
from training.report import duration, run_metrics, size, summary
from training.trainer import make_trainer


@dataclass
class TrainResult:
    out: Path
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Built:
    """A model as the recipe built it for the plan."""

    model: Any  # on the plan's device
    trainable: int  # parameters the optimizer updates (AdamW keeps two fp32 moments each)
    line: str  # what the log says about it
    metrics: dict[str, Any] = field(default_factory=dict)  # added to metrics.json


@dataclass(frozen=True)
class Recipe:
    """What one architecture's run brings to the harness; the rest is the same for all."""

    data: tuple[Path, Path]  # train.jsonl, val.jsonl
    resume_step: int | None  # from check_output
    started: float  # time.perf_counter() when the run began, for metrics.json's "seconds"
    tokenizer: Any
    max_length: int  # tokens per sample, longer ones are cut
    build: Callable[[Plan], Built]  # called after the seed is set
    save: Callable[[Any, Path], None]  # (the kept model, a directory) -> its weights there
    record: dict[str, Any]  # what training_config.json holds beyond the config and schedule
    gradient_checkpointing: bool
    batching: str  # one of config.BATCHING
    what: str  # "adapter" or "model", for the summary
    next_cmd: str  # the command the summary suggests


def train_and_save(
    cfg: RunConfig,
    recipe: Recipe,
    *,
    log: Callable[[str], None] = print,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
) -> TrainResult:
    """Train the recipe's model on its data and write cfg.out (the story above)."""
    # 1. the encoded splits
    train_path, val_path = data = recipe.data
    resume_step = recipe.resume_step
    tokenizer = recipe.tokenizer
    opts = {"assistant_only": cfg.assistant_only, "max_length": recipe.max_length}
    train_set, train_stats = dataset.load_split(train_path, tokenizer, **opts)
    val_set, val_stats = dataset.load_split(val_path, tokenizer, **opts)
    check_splits(cfg, data, train_stats, val_stats, recipe, log)

    # 2. where and how long
    plan = plan_device(cfg)
    sched = schedule(cfg, len(train_set), plan)

    # 3. the model (seeded: LoRA's A matrices and scratch weights start random)
    from transformers import set_seed

    set_seed(cfg.seed)
    built = recipe.build(plan)
    log(f"{built.line}; {plan.describe()}")

    # 4. measure one step on the longest samples, then estimate the whole run
    per_token = probe(built.model, train_set, plan, tokenizer.pad_token_id)
    evals = sched.steps // sched.eval_every if val_set else 0
    # backward costs about twice the forward, so an eval token costs a third of a train one
    estimate = per_token * (train_stats.tokens * sched.epochs + evals * val_stats.tokens / 3)
    remaining = estimate * (1 - (resume_step or 0) / sched.steps)
    # AdamW adds two fp32 moments per trainable parameter at the first optimizer step
    peak = peak_memory(plan.device) + 8 * built.trainable
    log(
        f"estimate: {sched.steps} steps (~{sched.epochs:.2f} epochs, eval every "
        f"{sched.eval_every}), ~{duration(remaining)}{' remaining' if resume_step else ''}, "
        f"peak memory ~{size(peak)} (measured {per_token * 1000:.1f} ms per token on the "
        "longest samples)"
    )

    # 5. train (checkpoints in the work dir; an interruption leaves them for the next run)
    trainer = make_trainer(
        work_dir=cfg.work_dir,
        lr=cfg.lr,
        seed=cfg.seed,
        gradient_checkpointing=recipe.gradient_checkpointing,
        batching=recipe.batching,
        plan=plan,
        sched=sched,
        model=built.model,
        tokenizer=tokenizer,
        train_set=train_set,
        val_set=val_set,
        progress=progress,
    )
    train_seconds = fit(trainer, cfg, resume_step, callbacks, log)

    # 6. the weights (the best step's: load_best_model_at_end), tokenizer, config, numbers
    metrics = run_metrics(
        trainer,
        sched,
        plan,
        resume_step,
        train_stats,
        val_stats,
        t_start=recipe.started,
        train_seconds=train_seconds,
        estimate=remaining,
        peak=peak,
    )
    metrics.update(built.metrics)
    record = {
        **cfg.to_dict(),
        **recipe.record,
        **dataclasses.asdict(sched),
        "lr_schedule": "linear warmup, cosine decay",
        "chat_template_sha256": template_sha256(CHAT_TEMPLATE),
    }
    write_output(cfg, lambda d: recipe.save(trainer.model, d), tokenizer, record, metrics)
    shutil.rmtree(cfg.work_dir, ignore_errors=True)
    log(summary(cfg, metrics, what=recipe.what, next_cmd=recipe.next_cmd))
    return TrainResult(cfg.out, metrics)


def check_output(
    cfg: RunConfig, *, done_file: str, what: str, resume_keys: Sequence[str]
) -> int | None:
    """Refuse to overwrite a finished output (adapter or model) unless --force; the step of
    the checkpoint to resume, if any, when it was made with the same `resume_keys`."""
    if (cfg.out / done_file).is_file() and not cfg.force:
        raise ConfigError(
            f"{cfg.out} already holds {what}; pass --force to train it again "
            "(the old one is kept until the new one is complete) or --name to write another"
        )
    if cfg.force:
        shutil.rmtree(cfg.work_dir, ignore_errors=True)
    step = last_checkpoint_step(cfg.work_dir)
    if step is None and cfg.resume:
        raise ConfigError(
            f"--resume: no checkpoint of {cfg.name!r} in {cfg.work_dir}; run without --resume "
            "to start"
        )
    saved = cfg.work_dir / CONFIG_FILE
    if step is not None and saved.is_file():
        before = json.loads(saved.read_text(encoding="utf-8"))
        now = cfg.to_dict()
        changed = [k for k in resume_keys if before.get(k) != now.get(k)]
        if changed:
            diff = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
            raise ConfigError(
                f"a checkpoint of {cfg.name!r} (step {step}) was made with other options "
                f"({diff}); pass the same options to resume it, or --force to start over"
            )
    return step


def last_checkpoint_step(work_dir: Path) -> int | None:
    steps = [
        int(p.name.split("-")[1])
        for p in Path(work_dir).glob("checkpoint-*")
        if p.name.split("-")[1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(steps, default=None)


def check_splits(cfg, data: tuple[Path, Path], train_stats, val_stats, recipe, log) -> None:
    """Refuse a train split with nothing to learn; log what the splits hold."""
    train_path, val_path = data
    if not train_stats.kept:
        why = (
            "it is empty; rebuild it with `balabol data ...`"
            if train_stats.samples == 0
            else f"none of its {train_stats.samples} samples has an assistant reply to learn "
            "(pass --all-tokens to learn every token)"
        )
        raise DataError(f"{train_path} has nothing to train on: {why}")
    log(
        f"data {cfg.data}: train {train_stats.kept} samples ({train_stats.tokens} tokens, "
        f"{train_stats.target_tokens} with loss), val {val_stats.kept}"
        + (f"; skipped {train_stats.no_targets} without a reply" if train_stats.no_targets else "")
        + (
            f"; cut {train_stats.truncated} to {recipe.max_length} tokens"
            if train_stats.truncated
            else ""
        )
    )
    if not val_stats.kept:
        log(
            f"WARNING: {val_path} has no samples: no evaluation, the last step's {recipe.what} "
            "is kept"
        )


def fit(trainer, cfg, resume_step: int | None, callbacks: Sequence[Any], log) -> float:
    """Train (resuming from the checkpoint of resume_step), leaving the checkpoints in
    cfg.work_dir when interrupted; the seconds it took."""
    for cb in callbacks:
        trainer.add_callback(cb)
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    (cfg.work_dir / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    checkpoint = None
    if resume_step is not None:
        checkpoint = cfg.work_dir / f"checkpoint-{resume_step}"
        log(f"resuming from step {resume_step} ({checkpoint})")
    t_train = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # the Trainer's checkpoint rotation notes that it sorts by step number instead
            warnings.filterwarnings("ignore", message="mtime may not be reliable")
            trainer.train(resume_from_checkpoint=checkpoint and str(checkpoint))
    except KeyboardInterrupt:
        done = last_checkpoint_step(cfg.work_dir)
        where = f"the last checkpoint is step {done}" if done else "no checkpoint was saved yet"
        step = trainer.state.global_step
        log(f"\ninterrupted at step {step}; {where}. Run the same command to resume.")
        raise
    return time.perf_counter() - t_train


def write_output(cfg, save: Callable[[Path], None], tokenizer, record: dict, metrics: dict) -> None:
    """Weights (`save(dir)`), tokenizer, chat template, config and metrics into a temporary
    directory, swapped into OUT_DIR/NAME when complete."""
    with replacing_dir(cfg.out) as tmp:
        save(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / CHAT_TEMPLATE_FILE).write_text(CHAT_TEMPLATE, encoding="utf-8")
        (tmp / CONFIG_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
