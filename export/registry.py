"""Per-architecture export specs, registered with a decorator; a failed lookup lists them.

Example: `balabol export --base ./my-gpt2` looks up config.model_type "gpt2" here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from balabol.errors import BaseModelError, UnsupportedArchitectureError


@dataclass(frozen=True)
class ArchSpec:
    name: str
    model_types: tuple[str, ...]  # config.model_type values this spec covers
    examples: str
    # The ONNX graph is an fp32 re-trace of the same weights: logits must agree this well.
    onnx_atol: float = 1e-3
    # config.json keys some tools still expect, filled from their modern names
    # (llama.cpp's converter reads GPT-2's `n_ctx`, which new transformers no longer write).
    legacy_config_keys: tuple[tuple[str, str], ...] = ()
    # whether a LoRA adapter can be merged into it (Balabol's LSTM has none)
    adapters: bool = True

    def complete_config(self, config: dict[str, Any]) -> dict[str, Any]:
        missing = {
            old: config[new]
            for old, new in self.legacy_config_keys
            if old not in config and new in config
        }
        return {**config, **missing}


ARCHITECTURES: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    for t in spec.model_types:
        ARCHITECTURES[t] = spec
    return spec


register(ArchSpec("llama", ("llama",), "SmolLM2, TinyLlama, Llama 2/3"))
register(
    ArchSpec(
        "gpt2",
        ("gpt2",),
        "GPT-2, DistilGPT2, ruGPT-3 small/medium",
        legacy_config_keys=(("n_ctx", "n_positions"),),
    )
)
# Gemma 3 text models: SentencePiece vocabulary of 262k tokens (tokenizer.model goes to
# llama.cpp's converter), tied embeddings, 5 sliding-window layers per global one.
register(ArchSpec("gemma3", ("gemma3_text",), "Gemma-3-270M (--base gemma3-270m)"))
# Balabol's own recurrent baseline (balabol/lstm.py): exported by export/lstm.py, not optimum
register(
    ArchSpec("lstm", ("balabol-lstm",), "the LSTM of `balabol train --arch lstm`", adapters=False)
)


def supported() -> str:
    return ", ".join(f"{s.name} ({s.examples})" for s in dict.fromkeys(ARCHITECTURES.values()))


CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def lookup(config: dict[str, Any], *, where: str = "the base") -> ArchSpec:
    """The spec for an HF config.json dict, or a clear error."""
    archs = config.get("architectures") or []
    if archs and not any(a.endswith(CAUSAL_SUFFIXES) for a in archs):
        raise BaseModelError(
            f"{where} is a {', '.join(archs)}, not a causal language model; Balabol needs a "
            f"text generator (…ForCausalLM / …LMHeadModel). Supported: {supported()}"
        )
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"{where} has architecture {model_type!r}, which Balabol cannot export yet. "
            f"Supported: {supported()}. To add one, register an ArchSpec in export/registry.py."
        )
    return ARCHITECTURES[model_type]
