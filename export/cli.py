"""`balabol export`: the command (registered in pyproject.toml under `balabol.commands`). Its
flags are ExportConfig's fields (export/config.py; help: each field's docstring) plus what the
command does around the pipeline (--skip-existing, --allow-failed, --verbose).

    balabol export --base default --adapter adapters/me --formats onnx gguf-q4_k_m

Kept light: the pipeline (numpy, the exporters) is imported when the command runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from cyclopts import Parameter

from balabol.cli import flags
from export.config import ExportConfig


@flags(
    # their help words the default better than its value
    out_dir=Parameter(show_default=False),
    formats=Parameter(show_default=False),
)
@dataclass(frozen=True)
class Export(ExportConfig):
    """ExportConfig as flags, less the parity thresholds (tests and benchmarks set those)."""

    gates: Annotated[dict[str, Any] | None, Parameter(parse=False)] = None


def export(
    *,
    # None until a flag is given: building the config imports the parity thresholds (numpy)
    config: Annotated[Export | None, Parameter(name="*")] = None,
    skip_existing: Annotated[
        bool, Parameter(help="do nothing (exit 0) if the artifact already exists")
    ] = False,
    allow_failed: Annotated[
        bool, Parameter(help="exit 0 even when an artifact fails its parity gate")
    ] = False,
    verbose: Annotated[
        bool,
        Parameter(help="show everything the libraries print (optimum, onnxruntime, llama.cpp)"),
    ] = False,
) -> int:
    """Merge, export to ONNX fp32/int8 and GGUF f16/q8_0/q4_k_m/q4_0, check each against torch."""
    from balabol.manifest import Manifest
    from balabol.quiet import verbosity
    from export.pipeline import run

    cfg = config or Export()
    existing = cfg.out_dir / cfg.artifact_name
    if skip_existing and not cfg.force and existing.exists():
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
