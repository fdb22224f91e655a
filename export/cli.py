"""The export stage's commands (registered in pyproject.toml under `balabol.commands`).

Kept light: heavy modules are imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated


def export(
    *,
    base: Annotated[
        str, "base model: 'default' (embedded SmolLM2-135M-Instruct) or an HF model directory"
    ] = "default",
    adapter: Annotated[
        Path | None, "LoRA adapter directory to merge (from `balabol train`)"
    ] = None,
    name: Annotated[str | None, "artifact name (default: the base's or the adapter's name)"] = None,
    out_dir: Annotated[
        Path | None, "where artifacts go (default: ./artifacts or $BALABOL_ARTIFACTS)"
    ] = None,
    formats: Annotated[list[str] | None, "only these formats (default: all)"] = None,
    force: Annotated[bool, "replace an existing artifact of the same name"] = False,
    skip_existing: Annotated[bool, "do nothing (exit 0) if the artifact already exists"] = False,
    allow_failed: Annotated[bool, "exit 0 even when an artifact fails its parity gate"] = False,
    verbose: Annotated[
        bool, "show everything the libraries print (optimum, onnxruntime, llama.cpp)"
    ] = False,
) -> int:
    """Merge, export to ONNX fp32/int8 and GGUF f16/q8_0/q4_k_m/q4_0, check each against torch."""
    from balabol.manifest import FORMATS, Manifest
    from balabol.quiet import verbosity
    from export.pipeline import ExportConfig, run

    kwargs = {"out_dir": out_dir} if out_dir else {}
    cfg = ExportConfig(
        base=base,
        adapter=adapter,
        name=name,
        force=force,
        formats=tuple(formats) if formats else tuple(FORMATS),
        **kwargs,
    )
    existing = cfg.out_dir / cfg.artifact_name
    if skip_existing and not force and existing.exists():
        Manifest.load(existing)  # a broken one is an error, not "up to date"
        print(f"{existing} already exists; pass --force to rebuild it")
        return 0
    with verbosity(verbose):
        manifest = run(cfg)
    failed = [a.format for a in manifest.artifacts if a.status == "failed"]
    if failed and not allow_failed:
        print(f"failed parity: {', '.join(failed)} (kept, marked failed; --allow-failed exits 0)")
        return 1
    return 0
