"""`balabol train`: the command. Its flags are the fields of the configs, each once, with the
help of each field's docstring: `RunConfig` (every architecture; training/config.py),
`TrainConfig` (LoRA; training/lora.py) and `ScratchConfig` (a small GPT or an LSTM;
training/baselines/common.py). --arch picks the row of `ARCHS` that builds its config from them
and runs it; a flag of the other kind of model is an error that names it.

    balabol train --base default --data data/me --name me --epochs 3      # LoRA -> adapters/me/
    balabol train --arch gpt-scratch --data data/jokes --name jokes-gpt   # -> models/jokes-gpt/

Light at import (stdlib, `balabol/`, the config modules): the architecture's module, and with
it torch, is imported when the command runs, so `balabol --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from cyclopts import Group, Parameter

from balabol.cli import flags
from balabol.errors import ConfigError
from training.baselines.common import ScratchConfig
from training.config import RunConfig
from training.lora import TrainConfig

RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))  # every architecture's


def _own(config: type) -> tuple[str, ...]:
    """The fields a config adds to RunConfig's: the options of that kind of model only."""
    return tuple(f.name for f in dataclasses.fields(config) if f.name not in RUN_FIELDS)


LORA_ONLY = _own(TrainConfig)  # base, qlora, lora_r, ...
SCRATCH_ONLY = tuple(k for k in _own(ScratchConfig) if k != "arch")  # vocab_size, n_layer, ...

# --help: a heading per kind of option
GROUPS = (
    (Group("Model", sort_key=0), ("arch",)),
    (Group("Training (every --arch)", sort_key=1), RUN_FIELDS),
    (Group("LoRA (--arch lora)", sort_key=2), LORA_ONLY),
    (Group("From scratch (--arch gpt-scratch, lstm)", sort_key=3), SCRATCH_ONLY),
)
# The field is positive (the loss on the assistant replies only); its negative is the flag
# users know, --all-tokens (and --no-all-tokens, as argparse spelled the positive, stays).
SPELLED = {"assistant_only": {"negative": "--all-tokens", "alias": "--no-all-tokens"}}


@flags(**{k: Parameter(group=g, **SPELLED.get(k, {})) for g, keys in GROUPS for k in keys})
@dataclass(frozen=True)
class TrainOptions(TrainConfig, ScratchConfig):
    """Every flag of `balabol train`: the fields of both configs, unchecked, and None where
    the architecture has its own default. --arch picks the config that checks them."""

    arch: Literal["lora", "gpt-scratch", "lstm"] = "lora"
    """what to train: a LoRA adapter on --base, or a small GPT or an LSTM from scratch (own BPE tokenizer, written to ./models/NAME)"""
    out_dir: Path | None = None
    lr: float | None = None
    max_length: int | None = None
    vocab_size: int | None = None

    def __post_init__(self):
        pass  # checked as the config --arch picks (ARCHS), which names the flag at fault


def train(*, options: Annotated[TrainOptions, Parameter(name="*")] = TrainOptions()) -> int:
    """Fine-tune a LoRA adapter on data/NAME (QLoRA with --qlora), or train a small GPT or an
    LSTM from scratch (--arch); writes adapters/NAME/ or models/NAME/."""
    chosen = ARCHS[options.arch]
    cfg = chosen.config(options)
    importlib.import_module(chosen.module).run(cfg)
    return 0


# --- --arch -> how it is configured and run -------------------------------------------------


def flag(key: str, value: object = True) -> str:
    """How the user gave option `key` the value `value`: `--lora-r`, `--no-gradient-checkpointing`."""
    return ("--no-" if value is False else "--") + key.replace("_", "-")


def run_options(o: TrainOptions) -> dict[str, object]:
    """The options every architecture's config takes (RunConfig's fields); one left None is
    not passed, so the architecture's default applies (out_dir, lr, max_length)."""
    return {k: v for k in RUN_FIELDS if (v := getattr(o, k)) is not None}


def lora_config(o: TrainOptions) -> RunConfig:
    # a scratch option is None unless given
    given = [flag(k) for k in SCRATCH_ONLY if getattr(o, k) is not None]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: options of scratch models; pass --arch gpt-scratch or "
            "--arch lstm, or leave them out to train LoRA"
        )
    return TrainConfig(**run_options(o), **{k: getattr(o, k) for k in LORA_ONLY})


def scratch_config(o: TrainOptions) -> RunConfig:
    # a LoRA option is given when it differs from TrainConfig's default
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    given = [flag(k, v) for k in LORA_ONLY if (v := getattr(o, k)) != defaults[k]]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: LoRA options; --arch {o.arch} trains a model from scratch"
        )
    model = {k: v for k in SCRATCH_ONLY if (v := getattr(o, k)) is not None}  # else: the arch's
    return ScratchConfig(arch=o.arch, **run_options(o), **model)


@dataclass(frozen=True)
class Arch:
    """How `balabol train --arch NAME` trains: its config from the command's options, and the
    module whose `run(cfg)` does it (imported only when the command runs)."""

    config: Callable[[TrainOptions], RunConfig]
    module: str


ARCHS: dict[str, Arch] = {
    "lora": Arch(lora_config, "training.lora"),
    "gpt-scratch": Arch(scratch_config, "training.baselines"),
    "lstm": Arch(scratch_config, "training.baselines"),
}
