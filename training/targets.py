"""Which layers get LoRA adapters, per architecture; a failed lookup lists the supported ones.

Training depends only on `balabol/`, so this is its own small registry (export keeps another
in export/registry.py for what differs at export time).

Example: `balabol train --base ./my-gpt2 --data data/me --name me` looks up "gpt2" here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from balabol.errors import BaseModelError, UnsupportedArchitectureError


@dataclass(frozen=True)
class TargetSpec:
    name: str
    model_types: tuple[str, ...]  # config.model_type values this spec covers
    target_modules: tuple[str, ...]  # module-name suffixes peft wraps with LoRA
    examples: str
    # GPT-2 stores its projections as Conv1D with (in, out) weights; peft must know.
    fan_in_fan_out: bool = False


TARGETS: dict[str, TargetSpec] = {}


def register(spec: TargetSpec) -> TargetSpec:
    for t in spec.model_types:
        TARGETS[t] = spec
    return spec


register(
    TargetSpec(
        "llama",
        ("llama",),
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "SmolLM2, TinyLlama, Llama 2/3",
    )
)
register(
    TargetSpec(
        "gemma3",
        ("gemma3_text",),
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "Gemma-3-270M",
    )
)
register(
    TargetSpec(
        "gpt2",
        ("gpt2",),
        ("c_attn", "c_proj", "c_fc"),
        "GPT-2, DistilGPT2, ruGPT-3 small/medium",
        fan_in_fan_out=True,
    )
)


def supported() -> str:
    return ", ".join(f"{s.name} ({s.examples})" for s in dict.fromkeys(TARGETS.values()))


def lookup(config: dict[str, Any], *, where: str = "the base") -> TargetSpec:
    """The spec for an HF config.json dict, or a clear error."""
    archs = config.get("architectures") or []
    if archs and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise BaseModelError(
            f"{where} is a {', '.join(archs)}, not a causal language model; Balabol trains "
            f"text generators (…ForCausalLM / …LMHeadModel). Supported: {supported()}"
        )
    model_type = config.get("model_type")
    if model_type not in TARGETS:
        raise UnsupportedArchitectureError(
            f"{where} has architecture {model_type!r}, which Balabol cannot fine-tune yet. "
            f"Supported: {supported()}. To add one, register a TargetSpec in training/targets.py."
        )
    return TARGETS[model_type]
