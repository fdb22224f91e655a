"""ONNX fp32 with KV cache through optimum (`text-generation-with-past`).

Example: `balabol export` writes artifacts/<name>/onnx/model.onnx.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import warnings
from pathlib import Path

from balabol.errors import ExportError, require

TOKENIZER_PREFIXES = ("tokenizer", "special_tokens", "chat_template", "generation_config")


def export_onnx(hf_dir: Path, out_dir: Path) -> Path:
    require("optimum.exporters.onnx", extra="export")
    from optimum.exporters.onnx import main_export

    # optimum prints a wall of tracer warnings; our parity gate is the validation.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
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
    # The tokenizer travels with the graph so the directory is self-contained.
    for f in hf_dir.iterdir():
        wanted = f.name.startswith(TOKENIZER_PREFIXES)
        if wanted and not (out_dir / f.name).exists():
            shutil.copy2(f, out_dir / f.name)
    return model
