"""ONNX fp32 with KV cache through optimum (`text-generation-with-past`), then fused by
onnxruntime's transformer optimizer where it knows the architecture.

Residual + RMSNorm become SkipSimplifiedLayerNormalization and, for llama, each layer's
attention one GroupQueryAttention node (export/gqa.py): SmolLM2-135M's graph goes from ~3150
nodes per decode step to 400, and decodes 1.4x faster in fp32 and 1.7x in int8
(benchmarks/probe.py); logits stay within 2e-4 of optimum's graph.

Example: `balabol export` writes artifacts/<name>/onnx/model.onnx.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from balabol.architectures import MODEL_TYPES, model_config
from balabol.errors import ExportError, require
from balabol.quiet import quiet
from export import gqa

TOKENIZER_PREFIXES = ("tokenizer", "special_tokens", "chat_template", "generation_config")


def fuse(model: Path, config: dict) -> dict[str, int]:
    """Rewrite `model` in place with onnxruntime's fusions for its architecture (and llama's
    attention as GroupQueryAttention); the fused operator counts (empty: none applied)."""
    arch = MODEL_TYPES.get(config.get("model_type", ""))
    kind = arch and arch.onnx_fusion  # the optimizer's model type for this graph, if checked
    if kind is None or model.with_name(model.name + "_data").exists():
        return {}  # unknown graph, or weights in a side file (over protobuf's 2 GB)
    from onnxruntime.transformers.optimizer import optimize_model

    # num_heads/hidden_size 0: read from the graph (the optimizer's "Please specify
    # parameters of num_heads and hidden_size" is about that, and kept quiet); opt_level 0:
    # fusions only, the session does its own graph optimizations at load time
    with quiet():
        fused = optimize_model(str(model), model_type=kind, num_heads=0, hidden_size=0, opt_level=0)
    stats = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
    if arch.name == "llama":
        stats["GroupQueryAttention"] = gqa.to_gqa(fused.model, config)
    fused.save_model_to_file(str(model), use_external_data_format=False)
    return stats


def export_onnx(hf_dir: Path, out_dir: Path) -> tuple[Path, dict[str, int]]:
    """out_dir/model.onnx and the fused operator counts (for the manifest: empty means the
    graph is optimum's as written)."""
    require("optimum.exporters.onnx", extra="export")
    from optimum.exporters.onnx import main_export

    # optimum prints a wall of tracer warnings; our parity gate is the validation.
    with quiet():
        main_export(
            str(hf_dir),
            output=out_dir,
            task="text-generation-with-past",
            device="cpu",
            do_validation=False,
            local_files_only=True,
        )
    model = out_dir / "model.onnx"
    if not model.is_file():
        raise ExportError(f"optimum wrote no model.onnx in {out_dir}: {sorted(out_dir.iterdir())}")
    config = model_config(hf_dir)
    fused = fuse(model, config)
    # The tokenizer travels with the graph so the directory is self-contained.
    for f in hf_dir.iterdir():
        wanted = f.name.startswith(TOKENIZER_PREFIXES)
        if wanted and not (out_dir / f.name).exists():
            shutil.copy2(f, out_dir / f.name)
    return model, fused
