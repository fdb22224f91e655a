"""`balabol train`: LoRA (or QLoRA, nf4) fine-tuning of a base model on data/NAME -> adapters/NAME/.

    balabol train --base default --data data/me --name me --epochs 3
    balabol export --base default --adapter adapters/me      # then merge and export it

The story of `run`:
 1. check the data, the base and the output (cheap, nothing written if they fail);
 2. tokenize with the chat format of balabol/prompt.py, labels on assistant replies only;
 3. plan the device: a CUDA GPU in fp16/bf16 when present, else the CPU in fp32 with
    gradient accumulation so the effective batch is the same;
 4. load the base (4-bit nf4 with --qlora), wrap the architecture's layers with LoRA;
 5. measure one step on the longest samples and print the time and peak-memory estimate;
 6. train with the HF Trainer: each batch packed into one row without padding (BATCHING),
    warmup + cosine LR, eval on val every N steps, checkpoints in adapters/.NAME.train/
    (an interrupted run resumes from the last one);
 7. save the best adapter, its tokenizer and chat template, the config and the metrics into
    a temporary directory renamed to adapters/NAME/ only when complete.

Only `balabol/` is imported here at module level; torch, transformers and peft are imported
inside the functions that need them, so `balabol --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

from balabol import bases
from balabol.errors import BaseModelError, ConfigError, DataError, require
from balabol.prompt import CHAT_TEMPLATE, template_sha256
from balabol.settings import adapters_dir
from training import attention, dataset, targets

# --- defaults, all in one place ----------------------------------------------------------
EPOCHS = 3.0
LR = 2e-4
WARMUP_FRACTION = 0.05  # of the optimizer steps, when --warmup-steps is not given
LORA_R = 16
# Dropout on the LoRA path copies every adapted layer's input (and keeps the mask for the
# backward pass): 0.05 made a LoRA step on SmolLM2-135M 30% slower on 2 CPU cores (6.5 s
# against 5.0 s, 4 x 220 tokens). unsloth also defaults to 0; --lora-dropout 0.05 to regularize.
LORA_DROPOUT = 0.0
BATCH_SIZE = 16  # effective batch (sequences per optimizer step), the same on GPU and CPU
CPU_MICRO_BATCH = 4  # sequences per forward pass on the CPU; the rest is accumulation
MAX_LENGTH = 1024  # tokens per sample, capped by the model's context
EVALS_PER_RUN = 10  # when --eval-every is not given
SEED = 42

CONFIG_FILE = "training_config.json"
METRICS_FILE = "metrics.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
DEVICES = ("auto", "cpu", "cuda")
# How samples become batches (benchmarks/test_training.py measures them side by side):
#   packed   each micro-batch's samples end to end in one row, one causal attention per
#            sample (training/attention.py) and logits at labelled positions only: no
#            compute on padding; random order
#   grouped  samples of similar length together, padded to the longest of each batch
#   random   random batches padded to their longest sample: what a plain Trainer run does
BATCHING = ("packed", "grouped", "random")


class RunConfig:
    """What every `balabol train --arch` config (frozen dataclasses with these fields: data,
    name, out_dir, max_length, epochs, max_steps, lr, warmup_steps, batch_size,
    micro_batch_size, eval_every, device, resume, force) shares: where the run writes, and
    the checks of those options; messages name the CLI flag."""

    LR_HINT = "LoRA usually 1e-4..1e-3"

    def check_run(self, *, example_name: str, positive: dict[str, Any]) -> None:
        if self.data is None:
            raise ConfigError("--data is required: a directory written by `balabol data ...`")
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        name = self.name or self.data.resolve().name
        if not name or "/" in name or name.startswith("."):
            raise ConfigError(f"--name {name!r}: use a plain directory name like '{example_name}'")
        object.__setattr__(self, "name", name)
        positive = {
            **positive,
            "--max-length": self.max_length,
            "--batch-size": self.batch_size,
            "--micro-batch-size": self.micro_batch_size,
            "--max-steps": self.max_steps,
            "--eval-every": self.eval_every,
        }
        for flag, value in positive.items():
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{flag} {value!r}: must be a whole number >= 1")
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ConfigError(
                f"--batch-size {self.batch_size} must be a multiple of --micro-batch-size "
                f"{self.micro_batch_size} (the rest is gradient accumulation)"
            )
        if not self.epochs > 0:
            raise ConfigError(f"--epochs {self.epochs}: must be > 0")
        if not 0 < self.lr < 1:
            raise ConfigError(f"--lr {self.lr}: must be between 0 and 1 ({self.LR_HINT})")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"--warmup-steps {self.warmup_steps}: must be >= 0")
        if self.device not in DEVICES:
            raise ConfigError(f"--device {self.device!r}: one of {', '.join(DEVICES)}")
        if self.resume and self.force:
            raise ConfigError("--resume and --force contradict each other; pass one")

    @property
    def out(self) -> Path:
        return self.out_dir / self.name

    @property
    def work_dir(self) -> Path:
        """Checkpoints of a run in progress; removed when the output is written."""
        return self.out_dir / f".{self.name}.train"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    base: str = "default"
    data: Path | None = None
    name: str | None = None
    out_dir: Path = field(default_factory=adapters_dir)
    # what to train
    qlora: bool = False
    lora_r: int = LORA_R
    lora_alpha: int | None = None  # default 2 * lora_r
    lora_dropout: float = LORA_DROPOUT
    assistant_only: bool = True
    max_length: int = MAX_LENGTH
    # how long and how fast
    epochs: float = EPOCHS
    max_steps: int | None = None  # overrides epochs
    lr: float = LR
    warmup_steps: int | None = None
    batch_size: int = BATCH_SIZE
    micro_batch_size: int | None = None
    eval_every: int | None = None
    gradient_checkpointing: bool = True
    batching: str = "packed"  # one of BATCHING
    device: str = "auto"
    seed: int = SEED
    # what to do with an earlier run
    resume: bool = False
    force: bool = False

    def __post_init__(self):
        if self.lora_alpha is None:
            object.__setattr__(self, "lora_alpha", 2 * self.lora_r)
        self.check_run(
            example_name="me",
            positive={"--lora-r": self.lora_r, "--lora-alpha": self.lora_alpha},
        )
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"--lora-dropout {self.lora_dropout}: must be in [0, 1)")
        if self.batching not in BATCHING:
            raise ConfigError(f"--batching {self.batching!r}: one of {', '.join(BATCHING)}")


# What must match for a checkpoint to be resumed (the rest may change between attempts).
RESUME_KEYS = (
    "base",
    "qlora",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "assistant_only",
    "max_length",
    "batch_size",
    "seed",
)


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


def plan_device(cfg: TrainConfig) -> Plan:
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


# --- the command ---------------------------------------------------------------------------


def train(
    *,
    arch: Annotated[
        Literal["lora", "gpt-scratch", "lstm"],
        "what to train: a LoRA adapter on --base, or a small GPT or an LSTM from scratch "
        "(own BPE tokenizer, written to ./models/NAME)",
    ] = "lora",
    base: Annotated[
        str, "base model: 'default' (embedded SmolLM2-135M-Instruct) or an HF model directory"
    ] = "default",
    data: Annotated[Path | None, "data directory with train.jsonl and val.jsonl"] = None,
    name: Annotated[
        str | None, "adapter or model name (default: the data directory's name)"
    ] = None,
    out_dir: Annotated[
        Path | None,
        "where adapters go (default: ./adapters or $BALABOL_ADAPTERS; scratch models: "
        "./models or $BALABOL_MODELS)",
    ] = None,
    qlora: Annotated[
        bool, "load the base in 4-bit nf4 (bitsandbytes) and train LoRA on it"
    ] = False,
    epochs: Annotated[float, "passes over train.jsonl"] = EPOCHS,
    max_steps: Annotated[
        int | None, "stop after this many optimizer steps (overrides --epochs)"
    ] = None,
    lr: Annotated[
        float | None,
        "peak learning rate, warmup then cosine decay (default: 2e-4 LoRA, 1e-3 gpt-scratch, "
        "2e-3 lstm)",
    ] = None,
    warmup_steps: Annotated[int | None, "LR warmup steps (default: 5%% of the steps)"] = None,
    lora_r: Annotated[int, "LoRA rank"] = LORA_R,
    lora_alpha: Annotated[int | None, "LoRA alpha (default: 2 x rank)"] = None,
    lora_dropout: Annotated[float, "dropout on the LoRA path"] = LORA_DROPOUT,
    # scratch models (--arch gpt-scratch | lstm); None: the architecture's default
    vocab_size: Annotated[int | None, "scratch: BPE vocabulary size (default 8000)"] = None,
    n_layer: Annotated[int | None, "scratch: layers (default: gpt-scratch 10, lstm 2)"] = None,
    n_embd: Annotated[int | None, "scratch: width (default: gpt-scratch 256, lstm 512)"] = None,
    n_head: Annotated[int | None, "gpt-scratch: attention heads (default 4)"] = None,
    dropout: Annotated[float | None, "scratch: dropout (default: gpt-scratch 0, lstm 0.1)"] = None,
    batch_size: Annotated[int, "sequences per optimizer step (same on GPU and CPU)"] = BATCH_SIZE,
    micro_batch_size: Annotated[
        int | None, "sequences per forward pass (default: the batch on GPU, 4 on CPU)"
    ] = None,
    max_length: Annotated[
        int | None,
        "tokens per sample, longer ones are cut (default 1024; scratch models: 512, their context)",
    ] = None,
    eval_every: Annotated[
        int | None, "evaluate on val.jsonl and checkpoint every N steps (default: 10 per run)"
    ] = None,
    all_tokens: Annotated[
        bool, "compute the loss on every token, not only assistant replies"
    ] = False,
    no_gradient_checkpointing: Annotated[bool, "keep activations (faster, more memory)"] = False,
    batching: Annotated[
        Literal["packed", "grouped", "random"],
        "packed: each micro-batch's samples in one row, no padding; grouped: similar lengths "
        "padded together; random: padded random batches (a plain Trainer run)",
    ] = "packed",
    device: Annotated[Literal["auto", "cpu", "cuda"], "where to train"] = "auto",
    seed: Annotated[int, "random seed"] = SEED,
    resume: Annotated[
        bool, "require resuming from a checkpoint (an interrupted run resumes anyway)"
    ] = False,
    force: Annotated[bool, "discard checkpoints and replace an existing adapter or model"] = False,
) -> int:
    """Fine-tune a LoRA adapter on data/NAME (QLoRA with --qlora), or train a small GPT or an
    LSTM from scratch (--arch); writes adapters/NAME/ or models/NAME/."""
    if arch != "lora":
        lora_only = {
            "--base": base != "default",
            "--qlora": qlora,
            "--lora-r": lora_r != LORA_R,
            "--lora-alpha": lora_alpha is not None,
            "--lora-dropout": lora_dropout != LORA_DROPOUT,
            "--no-gradient-checkpointing": no_gradient_checkpointing,
            "--batching": batching != "packed",
        }
        given = [flag for flag, on in lora_only.items() if on]
        if given:
            raise ConfigError(
                f"{', '.join(given)}: LoRA options; --arch {arch} trains a model from scratch"
            )
        from training.baselines import ScratchConfig
        from training.baselines import run as run_scratch

        scratch = ScratchConfig(
            arch=arch,
            data=data,
            name=name,
            **({"vocab_size": vocab_size} if vocab_size is not None else {}),
            n_layer=n_layer,
            n_embd=n_embd,
            n_head=n_head,
            dropout=dropout,
            max_length=max_length,
            assistant_only=not all_tokens,
            epochs=epochs,
            max_steps=max_steps,
            lr=lr,
            warmup_steps=warmup_steps,
            batch_size=batch_size,
            micro_batch_size=micro_batch_size,
            eval_every=eval_every,
            device=device,
            seed=seed,
            resume=resume,
            force=force,
            **({"out_dir": out_dir} if out_dir else {}),
        )
        run_scratch(scratch)
        return 0
    scratch_only = {
        "--vocab-size": vocab_size,
        "--n-layer": n_layer,
        "--n-embd": n_embd,
        "--n-head": n_head,
        "--dropout": dropout,
    }
    given = [flag for flag, value in scratch_only.items() if value is not None]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: options of scratch models; pass --arch gpt-scratch or "
            "--arch lstm, or leave them out to train LoRA"
        )
    cfg = TrainConfig(
        base=base,
        data=data,
        name=name,
        qlora=qlora,
        epochs=epochs,
        max_steps=max_steps,
        lr=LR if lr is None else lr,
        warmup_steps=warmup_steps,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        batch_size=batch_size,
        micro_batch_size=micro_batch_size,
        max_length=MAX_LENGTH if max_length is None else max_length,
        eval_every=eval_every,
        assistant_only=not all_tokens,
        gradient_checkpointing=not no_gradient_checkpointing,
        batching=batching,
        device=device,
        seed=seed,
        resume=resume,
        force=force,
        **({"out_dir": out_dir} if out_dir else {}),
    )
    run(cfg)
    return 0


# --- the pipeline -------------------------------------------------------------------------


def check_output(
    cfg,
    *,
    done_file: str = "adapter_config.json",
    what: str = "a trained adapter",
    resume_keys: Sequence[str] = RESUME_KEYS,
) -> int | None:
    """Refuse to overwrite a finished output (adapter or model); the step of the checkpoint
    to resume, if any. `cfg` is a TrainConfig or a baselines.ScratchConfig."""
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


def _load_model(base: Path | str, cfg: TrainConfig, plan: Plan, spec, new_token_ids, n_vocab):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if cfg.batching == "packed":  # one causal attention per packed sample, not a row mask
        kwargs["attn_implementation"] = attention.register()
    if cfg.qlora:
        require("bitsandbytes", extra="train")
        from transformers import BitsAndBytesConfig

        compute = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute[plan.precision],
        )
        kwargs["device_map"] = {"": 0 if plan.device == "cuda" else "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    except (OSError, ValueError, RuntimeError) as e:
        raise BaseModelError(f"cannot load the base model from {base}: {e}") from e
    if n_vocab > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(n_vocab)
    gc_kwargs = {"use_reentrant": False}  # no need to make the inputs require grad
    if cfg.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs=gc_kwargs,
        )
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    model.config.use_cache = False  # the cache is for generation and conflicts with checkpointing
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(spec.target_modules),
        # bitsandbytes replaces GPT-2's Conv1D with plain (out, in) Linear4bit layers
        fan_in_fan_out=spec.fan_in_fan_out and not cfg.qlora,
        bias="none",
        task_type="CAUSAL_LM",
        # rows of chat tokens the base did not have are trained too (and saved with it)
        trainable_token_indices=list(new_token_ids) or None,
    )
    model = get_peft_model(model, lora)
    # Checkpoints, like the final adapter, keep LoRA and the new token rows only: the rest of
    # a resized embedding is the base's (and for Gemma's 262k tokens ~700 MB per copy).
    save = model.save_pretrained
    model.save_pretrained = lambda *a, **k: save(*a, **{"save_embedding_layers": False, **k})
    return model


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


def size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def duration(s: float) -> str:
    s = round(s)
    return f"{s // 3600} h {s % 3600 // 60} min" if s >= 3600 else f"{s // 60} min {s % 60} s"


def steps_per_epoch(n_samples: int, plan: Plan) -> int:
    """As the HF Trainer counts them (a last partial accumulation still makes a step)."""
    return max(math.ceil(math.ceil(n_samples / plan.micro_batch) / plan.accumulation), 1)


@dataclass
class TrainResult:
    out: Path
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Schedule:
    steps: int  # optimizer steps
    epochs: float
    eval_every: int
    warmup: int


def schedule(cfg: TrainConfig, n_train: int, plan: Plan) -> Schedule:
    per_epoch = steps_per_epoch(n_train, plan)
    steps = cfg.max_steps or math.ceil(per_epoch * cfg.epochs)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(WARMUP_FRACTION * steps)
    return Schedule(
        steps, steps / per_epoch, cfg.eval_every or max(1, steps // EVALS_PER_RUN), warmup
    )


def run(
    cfg: TrainConfig,
    *,
    log: Callable[[str], None] = print,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
) -> TrainResult:
    t_start = time.perf_counter()
    # 1. cheap checks first: nothing is loaded or written if they fail
    train_path, val_path = dataset.data_files(cfg.data)
    base = bases.resolve(cfg.base)
    base_config = _hf_config(base)
    spec = targets.lookup(base_config, where=f"base {cfg.base}")
    resume_step = check_output(cfg)
    require("peft", extra="train")

    # 2. tokenize with the chat format the runtime serves
    tokenizer, new_ids = dataset.chat_tokenizer(base)
    ctx = int(base_config.get("max_position_embeddings") or base_config.get("n_positions") or 0)
    max_length = min(cfg.max_length, ctx) if ctx else cfg.max_length
    opts = {"assistant_only": cfg.assistant_only, "max_length": max_length}
    train_set, train_stats = dataset.load_split(train_path, tokenizer, **opts)
    val_set, val_stats = dataset.load_split(val_path, tokenizer, **opts)
    check_splits(cfg, train_path, val_path, train_stats, val_stats, max_length, log)

    # 3. where and how long
    plan = plan_device(cfg)
    sched = schedule(cfg, len(train_set), plan)

    # 4. the model (seeded: LoRA's A matrices start random)
    from transformers import set_seed

    set_seed(cfg.seed)
    model = _load_model(base, cfg, plan, spec, new_ids, len(tokenizer))
    if plan.device == "cuda" and not cfg.qlora:
        model.to("cuda")
    trainable, total = model.get_nb_trainable_parameters()
    log(
        f"base {cfg.base} ({spec.name}{', 4-bit nf4' if cfg.qlora else ''}): {total / 1e6:.1f} M "
        f"parameters, LoRA r={cfg.lora_r} on {', '.join(spec.target_modules)}: "
        f"{trainable / 1e6:.2f} M trainable; {plan.describe()}"
    )

    # 5. measure one step on the longest samples, then estimate the whole run
    per_token = probe(model, train_set, plan, tokenizer.pad_token_id)
    evals = sched.steps // sched.eval_every if val_set else 0
    # backward costs about twice the forward, so an eval token costs a third of a train one
    estimate = per_token * (train_stats.tokens * sched.epochs + evals * val_stats.tokens / 3)
    remaining = estimate * (1 - (resume_step or 0) / sched.steps)
    # AdamW adds two fp32 moments per trainable parameter at the first optimizer step
    peak = peak_memory(plan.device) + 8 * trainable
    log(
        f"estimate: {sched.steps} steps (~{sched.epochs:.2f} epochs, eval every "
        f"{sched.eval_every}), ~{duration(remaining)}{' remaining' if resume_step else ''}, "
        f"peak memory ~{size(peak)} (measured {per_token * 1000:.1f} ms per token on the "
        "longest samples)"
    )

    # 6. train (checkpoints in the work dir; an interruption leaves them for the next run)
    trainer = make_trainer(
        work_dir=cfg.work_dir,
        lr=cfg.lr,
        seed=cfg.seed,
        # for QLoRA, prepare_model_for_kbit_training has already turned it on
        gradient_checkpointing=cfg.gradient_checkpointing and not cfg.qlora,
        batching=cfg.batching,
        plan=plan,
        sched=sched,
        model=model,
        tokenizer=tokenizer,
        train_set=train_set,
        val_set=val_set,
        progress=progress,
    )
    train_seconds = fit(trainer, cfg, resume_step, callbacks, log)

    # 7. the adapter, its tokenizer and template, the config and the numbers
    metrics = run_metrics(
        trainer,
        sched,
        plan,
        resume_step,
        train_stats,
        val_stats,
        t_start=t_start,
        train_seconds=train_seconds,
        estimate=remaining,
        peak=peak,
    )
    record = {
        **cfg.to_dict(),
        "base_path": str(base),
        "architecture": spec.name,
        "target_modules": list(spec.target_modules),
        "added_tokens": [tokenizer.convert_ids_to_tokens(i) for i in new_ids],
        "max_length_used": max_length,
        **dataclasses.asdict(sched),
        "lr_schedule": "linear warmup, cosine decay",
        "chat_template_sha256": template_sha256(CHAT_TEMPLATE),
    }
    # New chat-token rows are saved as trainable tokens; the rest of the (resized)
    # embedding is the base's, so it is not copied into the adapter.
    save = trainer.model.save_pretrained
    write_output(
        cfg,
        lambda d: save(d, safe_serialization=True, save_embedding_layers=False),
        tokenizer,
        record,
        metrics,
    )
    shutil.rmtree(cfg.work_dir, ignore_errors=True)
    log(summary(cfg, metrics))
    return TrainResult(cfg.out, metrics)


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


def run_metrics(
    trainer,
    sched,
    plan,
    resume_step,
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


def check_splits(cfg, train_path, val_path, train_stats, val_stats, max_length, log) -> None:
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
        + (f"; cut {train_stats.truncated} to {max_length} tokens" if train_stats.truncated else "")
    )
    if not val_stats.kept:
        log(f"WARNING: {val_path} has no samples: no evaluation, the last step's adapter is kept")


def history(log_history: list[dict]) -> dict[str, Any]:
    """Train and val losses from the Trainer's log, and the step whose adapter is kept."""
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


def _hf_config(base: Path | str) -> dict:
    if isinstance(base, Path):
        return json.loads((base / "config.json").read_text(encoding="utf-8"))
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(base).to_dict()


def ppl(loss: float) -> float:
    return round(math.exp(min(loss, 50.0)), 4)


def make_trainer(
    *,
    work_dir: Path,
    lr: float,
    seed: int,
    gradient_checkpointing: bool,
    plan: Plan,
    batching: str,
    sched: Schedule,
    model,
    tokenizer,
    train_set,
    val_set,
    progress: bool,
):
    """The HF Trainer every `balabol train --arch` uses: warmup + cosine LR, eval and a
    checkpoint every sched.eval_every steps (and at the last one), the best one kept."""
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    has_val = bool(val_set)
    args = TrainingArguments(
        output_dir=str(work_dir),
        per_device_train_batch_size=plan.micro_batch,
        per_device_eval_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.accumulation,
        max_steps=sched.steps,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=sched.warmup,
        logging_steps=max(1, min(sched.eval_every, 10)),
        logging_first_step=True,
        eval_strategy="steps" if has_val else "no",
        eval_steps=sched.eval_every,
        save_strategy="steps",
        save_steps=sched.eval_every,
        save_total_limit=2,  # the last one (to resume) and the best one (to keep)
        load_best_model_at_end=has_val,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        use_cpu=plan.device == "cpu",
        fp16=plan.precision == "fp16",
        bf16=plan.precision == "bf16",
        gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        # similar lengths in a batch: less compute spent on padding (benchmarks/test_training.py)
        group_by_length=batching == "grouped",
        remove_unused_columns=False,
        label_names=["labels"],
        prediction_loss_only=True,  # eval needs the loss only, not (B, T, V) logits kept
        report_to="none",
        seed=seed,
        dataloader_pin_memory=plan.device == "cuda",
        disable_tqdm=not progress,
    )

    class CountingTrainer(Trainer):
        """Counts the token positions the training steps compute over, padding included,
        and the real tokens among them (a packed row has no padding, so no mask)."""

        processed_tokens = 0
        real_tokens = 0

        def training_step(self, model, inputs, *args, **kwargs):
            ids = inputs["input_ids"]
            self.processed_tokens += ids.numel()
            mask = inputs.get("attention_mask")
            self.real_tokens += ids.numel() if mask is None else int(mask.sum())
            return super().training_step(model, inputs, *args, **kwargs)

    pad = tokenizer.pad_token_id
    packed = batching == "packed"
    trainer = CountingTrainer(
        model=model,
        args=args,
        train_dataset=dataset.ChatDataset(train_set),
        eval_dataset=dataset.ChatDataset(val_set) if has_val else None,
        data_collator=(dataset.collate_packed if packed else partial(dataset.collate, pad_id=pad)),
        compute_loss_func=dataset.packed_loss if packed else None,
        callbacks=[final_step_callback()],
    )
    if progress:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(progress_callback())
    else:
        trainer.remove_callback(PrinterCallback)  # it prints every log dict
    return trainer


def final_step_callback():
    from transformers import TrainerCallback

    class FinalStep(TrainerCallback):
        """Evaluate and checkpoint the last step too, so it can be the one kept."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_evaluate = args.eval_strategy != "no"
                control.should_save = True
            return control

    return FinalStep()


def progress_callback():
    from tqdm.auto import tqdm
    from transformers.trainer_callback import ProgressCallback

    class Progress(ProgressCallback):
        """tqdm with ETA, started at the resumed step; one readable line per eval."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.training_bar = tqdm(
                total=state.max_steps, initial=state.global_step, unit="step", dynamic_ncols=True
            )
            self.current_step = state.global_step
            self.best = math.inf

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and self.training_bar is not None:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.3f}", refresh=False)
            if not logs or "eval_loss" not in logs:
                return
            loss = logs["eval_loss"]
            mark = " (best so far)" if loss < self.best else ""
            self.best = min(self.best, loss)
            tqdm.write(
                f"step {state.global_step}: val loss {loss:.4f}, perplexity {ppl(loss):.2f}{mark}"
            )

    return Progress()


def write_output(cfg, save: Callable[[Path], None], tokenizer, record: dict, metrics: dict) -> None:
    """Weights (`save(dir)`), tokenizer, chat template, config and metrics into a temporary
    directory, swapped into OUT_DIR/NAME when complete."""
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cfg.name}.partial-", dir=cfg.out_dir))
    try:
        save(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / CHAT_TEMPLATE_FILE).write_text(CHAT_TEMPLATE, encoding="utf-8")
        (tmp / CONFIG_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        old = None
        if cfg.out.exists():
            old = cfg.out_dir / f".{cfg.name}.old-{os.getpid()}"
            os.replace(cfg.out, old)
        os.replace(tmp, cfg.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def summary(cfg, m: dict, *, what: str = "adapter", next_cmd: str | None = None) -> str:
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
    nxt = next_cmd or f"balabol export --base {cfg.base} --adapter {cfg.out}"
    return "\n".join(["", *lines, "", f"next: {nxt}"])
