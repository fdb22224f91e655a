"""LoRA (or QLoRA, nf4) on a base model: `balabol train`'s default --arch. Its config, its
defaults, the base loaded and wrapped with LoRA, and `run`, which hands that to the harness
(training/harness.py) -> adapters/NAME/.

    balabol train --base default --data data/me --name me --epochs 3
    balabol export --base default --adapter adapters/me      # then merge and export it

The story of `run`:
 1. check the data, the base and the output (cheap, nothing written if they fail);
 2. the tokenizer: the base's, with the chat format of balabol/prompt.py (training/dataset.py);
 3. hand the rest to `harness.train_and_save`, with a recipe that loads the base (4-bit nf4
    with --qlora) and wraps the architecture's layers (balabol/architectures.py) with LoRA, and
    saves the adapter: LoRA and the rows of new chat tokens only.

Only `balabol/` is imported here at module level; torch, transformers and peft are imported
inside the functions that need them, so `balabol --help` stays fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from balabol import architectures, bases
from balabol.architectures import model_config
from balabol.errors import BaseModelError, ConfigError, require
from balabol.settings import adapters_dir
from training import attention, dataset, harness
from training.config import BATCHING, Batching, RunConfig
from training.plan import Plan

# --- LoRA's defaults (the run-wide ones are in training/config.py) --------------------------
LR = 2e-4
LORA_R = 16
# Dropout on the LoRA path copies every adapted layer's input (and keeps the mask for the
# backward pass): 0.05 made a LoRA step on SmolLM2-135M 30% slower on 2 CPU cores (6.5 s
# against 5.0 s, 4 x 220 tokens). unsloth also defaults to 0; --lora-dropout 0.05 to regularize.
LORA_DROPOUT = 0.0
MAX_LENGTH = 1024  # tokens per sample, capped by the model's context


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    LR_HINT = "LoRA usually 1e-4..1e-3"

    # The docstrings are the help of `balabol train`'s flags (training/train.py).
    base: str = "default"
    """base model: 'default' (embedded SmolLM2-135M-Instruct) or an HF model directory"""
    out_dir: Path = field(default_factory=adapters_dir)
    max_length: int = MAX_LENGTH  # capped by the base's context
    lr: float = LR
    # what to train
    qlora: bool = False
    """load the base in 4-bit nf4 (bitsandbytes) and train LoRA on it"""
    lora_r: int = LORA_R
    """LoRA rank"""
    lora_alpha: int | None = None  # default 2 * lora_r
    """LoRA alpha (default: 2 x rank)"""
    lora_dropout: float = LORA_DROPOUT
    """dropout on the LoRA path"""
    gradient_checkpointing: bool = True
    """recompute activations in the backward pass: less memory, slower (--no-gradient-checkpointing keeps them)"""
    batching: Batching = "packed"
    """packed: each micro-batch's samples in one row, no padding; grouped: similar lengths padded together; random: padded random batches (a plain Trainer run)"""

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


def run(
    cfg: TrainConfig,
    *,
    log: Callable[[str], None] = print,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
) -> harness.TrainResult:
    """Train a LoRA adapter on cfg.base -> cfg.out (see the module's story)."""
    t_start = time.perf_counter()
    # 1. cheap checks first: nothing is loaded or written if they fail
    data = dataset.data_files(cfg.data)
    base = bases.resolve(cfg.base)
    base_config = model_config(base)
    spec = architectures.lookup(base_config, where=f"base {cfg.base}", to="fine-tune")
    resume_step = harness.check_output(
        cfg, done_file="adapter_config.json", what="a trained adapter", resume_keys=RESUME_KEYS
    )
    require("peft", extra="train")

    # 2. the chat format the runtime serves, within the base's context
    tokenizer, new_ids = dataset.chat_tokenizer(base)
    ctx = int(base_config.get("max_position_embeddings") or base_config.get("n_positions") or 0)
    max_length = min(cfg.max_length, ctx) if ctx else cfg.max_length

    def build(plan: Plan) -> harness.Built:
        model = _load_model(base, cfg, plan, spec, new_ids, len(tokenizer))
        if plan.device == "cuda" and not cfg.qlora:
            model.to("cuda")
        trainable, total = model.get_nb_trainable_parameters()
        line = (
            f"base {cfg.base} ({spec.name}{', 4-bit nf4' if cfg.qlora else ''}): "
            f"{total / 1e6:.1f} M parameters, LoRA r={cfg.lora_r} on "
            f"{', '.join(spec.lora_targets)}: {trainable / 1e6:.2f} M trainable"
        )
        return harness.Built(model, trainable, line)

    # 3. the shared sequence: plan, probe, fit, metrics, write
    recipe = harness.Recipe(
        data=data,
        resume_step=resume_step,
        started=t_start,
        tokenizer=tokenizer,
        max_length=max_length,
        build=build,
        # New chat-token rows are saved as trainable tokens; the rest of the (resized)
        # embedding is the base's, so it is not copied into the adapter.
        save=lambda model, d: model.save_pretrained(
            d, safe_serialization=True, save_embedding_layers=False
        ),
        record={
            "base_path": str(base),
            "architecture": spec.name,
            "target_modules": list(spec.lora_targets),
            "added_tokens": [tokenizer.convert_ids_to_tokens(i) for i in new_ids],
            "max_length_used": max_length,
        },
        # for QLoRA, prepare_model_for_kbit_training has already turned it on
        gradient_checkpointing=cfg.gradient_checkpointing and not cfg.qlora,
        batching=cfg.batching,
        what="adapter",
        next_cmd=f"balabol export --base {cfg.base} --adapter {cfg.out}",
    )
    return harness.train_and_save(cfg, recipe, log=log, callbacks=callbacks, progress=progress)


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
        target_modules=list(spec.lora_targets),
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
