"""Every model architecture Balabol knows, in one table: what training, export and the
runtime each need to know about it. A failed lookup lists the supported names.

Training reads the LoRA targets, export the config keys and the ONNX fusion, the runtime
which formats exist (llama.cpp has no LSTM, so the LSTM has no GGUF). Stage code that
differs per architecture (export/lstm.py's builder, runtime/lstm_backend.py) stays in its
stage and is chosen by `Architecture.name`, the name the manifest records.

Example: `balabol export --base ./my-gpt2` looks up config.model_type "gpt2" here, and
`balabol train --base ./my-gpt2 ...` wraps its `c_attn`, `c_proj`, `c_fc` with LoRA.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from balabol.errors import BaseModelError, UnsupportedArchitectureError
from balabol.manifest import FORMATS

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")  # HF class names of text generators
HOW_TO_ADD = "to add one, register an Architecture in balabol/architectures.py"
# Llama-style attention and MLP projections (Llama, SmolLM2, Gemma 3)
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Architecture:
    name: str  # what the manifest and training_config.json call it
    model_types: tuple[str, ...]  # config.json "model_type" values it covers
    examples: str  # models of this architecture, shown when a lookup fails

    # --- training: which layers get LoRA adapters (empty: none, e.g. the LSTM) -------------
    lora_targets: tuple[str, ...] = ()  # module-name suffixes peft wraps
    fan_in_fan_out: bool = False  # GPT-2 stores projections as Conv1D with (in, out) weights

    # --- export ----------------------------------------------------------------------------
    # config.json keys some tools still expect, filled from their modern names
    # (llama.cpp's converter reads GPT-2's `n_ctx`, which new transformers no longer write).
    legacy_config_keys: tuple[tuple[str, str], ...] = ()
    # onnxruntime.transformers optimizer model type whose fusions match the ONNX graph; only
    # set where the fused graph was checked against the parity gate ("qwen3": decoder-only
    # with RoPE, GQA, RMSNorm)
    onnx_fusion: str | None = None

    # --- export and runtime: the formats that exist for it (None: all of balabol.manifest's)
    formats: tuple[str, ...] | None = None
    no_format_reason: str = ""  # why the others do not (the manifest records it as skipped)

    def __post_init__(self):
        unknown = set(self.formats or ()) - FORMATS.keys()
        assert not unknown, f"{self.name}: unknown formats {unknown}"  # a table typo
        assert self.formats is None or self.no_format_reason, f"{self.name}: say why not"

    @property
    def adapters(self) -> bool:
        """Whether a LoRA adapter can be trained on it and merged into it."""
        return bool(self.lora_targets)

    def has_format(self, fmt: str) -> bool:
        return self.formats is None or fmt in self.formats

    def complete_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """config.json with the legacy keys filled in where only the modern ones are set."""
        missing = {
            old: config[new]
            for old, new in self.legacy_config_keys
            if old not in config and new in config
        }
        return {**config, **missing}


ARCHITECTURES: dict[str, Architecture] = {}  # by name
MODEL_TYPES: dict[str, Architecture] = {}  # by config.json "model_type"


def register(arch: Architecture) -> Architecture:
    assert arch.name not in ARCHITECTURES, f"{arch.name} is registered twice"
    ARCHITECTURES[arch.name] = arch
    for t in arch.model_types:
        MODEL_TYPES[t] = arch
    return arch


register(
    Architecture(
        "llama",
        ("llama",),
        "SmolLM2, TinyLlama, Llama 2/3",
        lora_targets=LLAMA_PROJECTIONS,
        onnx_fusion="qwen3",
    )
)
register(
    Architecture(
        "gpt2",
        ("gpt2",),
        "GPT-2, DistilGPT2, ruGPT-3 small/medium",
        lora_targets=("c_attn", "c_proj", "c_fc"),
        fan_in_fan_out=True,
        legacy_config_keys=(("n_ctx", "n_positions"),),
    )
)
# Gemma 3 text models: SentencePiece vocabulary of 262k tokens (tokenizer.model goes to
# llama.cpp's converter), tied embeddings, 5 sliding-window layers per global one (the gguf
# engine reads that from the file: runtime/gguf_engine.py).
register(
    Architecture(
        "gemma3",
        ("gemma3_text",),
        "Gemma-3-270M (--base gemma3-270m)",
        lora_targets=LLAMA_PROJECTIONS,
        onnx_fusion="qwen3",
    )
)
# Balabol's own recurrent baseline (balabol/lstm.py): exported by export/lstm.py (not
# optimum), read by runtime/lstm_backend.py; trained from scratch, so no LoRA.
register(
    Architecture(
        "lstm",
        ("balabol-lstm",),
        "the LSTM of `balabol train --arch lstm`",
        formats=("torch", "onnx", "onnx-int8"),
        no_format_reason="llama.cpp has no LSTM architecture; use the onnx formats",
    )
)


def supported(archs=None) -> str:
    return ", ".join(f"{a.name} ({a.examples})" for a in archs or ARCHITECTURES.values())


def named(name: str) -> Architecture:
    """The architecture a manifest or training record names, or a clear error."""
    if name not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"architecture {name!r} is not one this Balabol knows (known: "
            f"{', '.join(ARCHITECTURES)}); it was written by another version: update Balabol "
            f"or re-export the model ({HOW_TO_ADD})"
        )
    return ARCHITECTURES[name]


def lookup(config: dict[str, Any], *, where: str = "the base", to: str = "export") -> Architecture:
    """The architecture of an HF config.json dict, or an error naming what is supported.

    to: what the caller will do with it, for the message ("export", "fine-tune"); to
    fine-tune, only architectures with LoRA targets qualify."""
    able = [a for a in ARCHITECTURES.values() if to != "fine-tune" or a.adapters]
    archs = config.get("architectures") or []
    if archs and not any(a.endswith(CAUSAL_SUFFIXES) for a in archs):
        raise BaseModelError(
            f"{where} is a {', '.join(archs)}, not a causal language model; Balabol needs a "
            f"text generator (…ForCausalLM / …LMHeadModel). Supported: {supported(able)}"
        )
    model_type = config.get("model_type")
    arch = MODEL_TYPES.get(model_type)
    if arch not in able:
        raise UnsupportedArchitectureError(
            f"{where} has architecture {model_type!r}, which Balabol cannot {to} yet. "
            f"Supported: {supported(able)}. Use a base of one of these, or {HOW_TO_ADD}."
        )
    return arch


def model_config(base: Path | str) -> dict[str, Any]:
    """The config.json of a model directory (a Path), or of a hub id (a str, via transformers)."""
    if isinstance(base, Path):
        return json.loads((base / "config.json").read_text(encoding="utf-8"))
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(base).to_dict()
