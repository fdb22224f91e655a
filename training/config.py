"""What every `balabol train --arch` run shares: the run-wide defaults, the names of the files
a run writes, and `RunConfig`, the checks of the options every architecture's config has.

    balabol train --data data/me --batch-size 16 --eval-every 50 --device cpu

Each architecture adds its own frozen dataclass on top: `lora.TrainConfig` (LoRA on a base),
`baselines.common.ScratchConfig` (a small GPT or an LSTM from scratch). Stdlib and `balabol/`
only, so the CLI can build a config without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from balabol.errors import ConfigError

# --- defaults, all in one place (LoRA's own are in training/lora.py) ----------------------
EPOCHS = 3.0
WARMUP_FRACTION = 0.05  # of the optimizer steps, when --warmup-steps is not given
BATCH_SIZE = 16  # effective batch (sequences per optimizer step), the same on GPU and CPU
CPU_MICRO_BATCH = 4  # sequences per forward pass on the CPU; the rest is accumulation
EVALS_PER_RUN = 10  # when --eval-every is not given
SEED = 42

CONFIG_FILE = "training_config.json"
METRICS_FILE = "metrics.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
Device = Literal["auto", "cpu", "cuda"]
DEVICES = get_args(Device)
# How samples become batches (benchmarks/test_training.py measures them side by side):
#   packed   each micro-batch's samples end to end in one row, one causal attention per
#            sample (training/attention.py) and logits at labelled positions only: no
#            compute on padding; random order
#   grouped  samples of similar length together, padded to the longest of each batch
#   random   random batches padded to their longest sample: what a plain Trainer run does
Batching = Literal["packed", "grouped", "random"]
BATCHING = get_args(Batching)


@dataclass(frozen=True)
class RunConfig:
    """The options every `balabol train --arch` config has (each architecture's frozen
    dataclass adds its own and may change a default), and their checks; messages name the
    CLI flag."""

    LR_HINT: ClassVar[str]  # the usual learning rates, for the --lr message

    # The docstrings are the help of `balabol train`'s flags (--arch picks the config).
    # the data and where the run writes
    data: Path | None = None
    """data directory with train.jsonl and val.jsonl"""
    name: str | None = None
    """adapter or model name (default: the data directory's name)"""
    out_dir: Path = Path()  # each architecture's own default
    """where adapters go (default: ./adapters or $BALABOL_ADAPTERS; scratch models: ./models or $BALABOL_MODELS)"""
    max_length: int | None = None
    """tokens per sample, longer ones are cut (default 1024; scratch models: 512, their context)"""
    assistant_only: bool = True
    """compute the loss on the assistant replies only (--all-tokens: on every token)"""
    # how long and how fast
    epochs: float = EPOCHS
    """passes over train.jsonl"""
    max_steps: int | None = None
    """stop after this many optimizer steps (overrides --epochs)"""
    lr: float | None = None
    """peak learning rate, warmup then cosine decay (default: 2e-4 LoRA, 1e-3 gpt-scratch, 2e-3 lstm)"""
    warmup_steps: int | None = None
    """LR warmup steps (default: 5% of the steps)"""
    batch_size: int = BATCH_SIZE
    """sequences per optimizer step (same on GPU and CPU)"""
    micro_batch_size: int | None = None
    """sequences per forward pass (default: the batch on GPU, 4 on CPU)"""
    eval_every: int | None = None
    """evaluate on val.jsonl and checkpoint every N steps (default: 10 per run)"""
    device: Device = "auto"
    """where to train"""
    seed: int = SEED
    """random seed"""
    # what to do with an earlier run
    resume: bool = False
    """require resuming from a checkpoint (an interrupted run resumes anyway)"""
    force: bool = False
    """discard checkpoints and replace an existing adapter or model"""

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
