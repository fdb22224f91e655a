"""`balabol train`: the command. Its typed signature is the CLI; --arch picks the row of
`ARCHS` that turns the options into that architecture's config and runs it.

    balabol train --base default --data data/me --name me --epochs 3      # LoRA -> adapters/me/
    balabol train --arch gpt-scratch --data data/jokes --name jokes-gpt   # -> models/jokes-gpt/

Light at import (stdlib, `balabol/`, the config modules): the architecture's module, and with
it torch, is imported when the command runs, so `balabol --help` stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from balabol.errors import ConfigError
from training.config import BATCH_SIZE, EPOCHS, SEED, RunConfig
from training.lora import LORA_DROPOUT, LORA_R, LR, MAX_LENGTH, TrainConfig


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
    # every option by name (nothing else is bound yet), for the architecture's config
    options = dict(locals())
    chosen = ARCHS[arch]
    cfg = chosen.config(arch, options)
    importlib.import_module(chosen.module).run(cfg)
    return 0


# --- --arch -> how it is configured and run -------------------------------------------------

# Options of one kind of architecture only, as the user spells them, and how to tell that one
# was given: a scratch option is None unless given, a LoRA one differs from its default.
SCRATCH_ONLY = ("vocab_size", "n_layer", "n_embd", "n_head", "dropout")
LORA_ONLY: dict[str, Callable[[dict[str, Any]], bool]] = {
    "base": lambda o: o["base"] != "default",
    "qlora": lambda o: o["qlora"],
    "lora_r": lambda o: o["lora_r"] != LORA_R,
    "lora_alpha": lambda o: o["lora_alpha"] is not None,
    "lora_dropout": lambda o: o["lora_dropout"] != LORA_DROPOUT,
    "no_gradient_checkpointing": lambda o: o["no_gradient_checkpointing"],
    "batching": lambda o: o["batching"] != "packed",
}


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def run_options(o: dict[str, Any]) -> dict[str, Any]:
    """The options every architecture's config takes (training/config.py's RunConfig)."""
    keys = ("data", "name", "epochs", "max_steps", "warmup_steps", "batch_size")
    keys += ("micro_batch_size", "eval_every", "device", "seed", "resume", "force")
    return {
        **{k: o[k] for k in keys},
        "assistant_only": not o["all_tokens"],
        **({"out_dir": o["out_dir"]} if o["out_dir"] else {}),
    }


def lora_config(arch: str, o: dict[str, Any]) -> RunConfig:
    given = [flag(k) for k in SCRATCH_ONLY if o[k] is not None]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: options of scratch models; pass --arch gpt-scratch or "
            "--arch lstm, or leave them out to train LoRA"
        )
    return TrainConfig(
        **run_options(o),
        base=o["base"],
        qlora=o["qlora"],
        lr=LR if o["lr"] is None else o["lr"],
        lora_r=o["lora_r"],
        lora_alpha=o["lora_alpha"],
        lora_dropout=o["lora_dropout"],
        max_length=MAX_LENGTH if o["max_length"] is None else o["max_length"],
        gradient_checkpointing=not o["no_gradient_checkpointing"],
        batching=o["batching"],
    )


def scratch_config(arch: str, o: dict[str, Any]) -> RunConfig:
    from training.baselines.common import ScratchConfig

    given = [flag(k) for k, on in LORA_ONLY.items() if on(o)]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: LoRA options; --arch {arch} trains a model from scratch"
        )
    model = {k: o[k] for k in SCRATCH_ONLY if o[k] is not None}  # the rest: the arch's default
    return ScratchConfig(
        arch=arch, **run_options(o), **model, lr=o["lr"], max_length=o["max_length"]
    )


@dataclass(frozen=True)
class Arch:
    """How `balabol train --arch NAME` trains: its config from the command's options, and the
    module whose `run(cfg)` does it (imported only when the command runs)."""

    config: Callable[[str, dict[str, Any]], RunConfig]
    module: str


ARCHS: dict[str, Arch] = {
    "lora": Arch(lora_config, "training.lora"),
    "gpt-scratch": Arch(scratch_config, "training.baselines"),
    "lstm": Arch(scratch_config, "training.baselines"),
}
