"""Greedy generation from any exported format, through the parity gate's own loaders.

This proves an artifact works end to end; the full runtime (sampling, streaming, sessions)
lives in `runtime/`. Example: `balabol generate --format onnx-int8 "Hello"`.
"""

from __future__ import annotations

import time
from pathlib import Path

from balabol.errors import ArtifactError
from balabol.manifest import Manifest, verify
from balabol.prompt import render_chat
from balabol.settings import artifacts_dir
from export.parity import GgufLM, OnnxLM, TorchLM

LOADERS = {
    "torch": lambda p: TorchLM(p),
    "onnx": lambda p: OnnxLM(p / "model.onnx"),
    "onnx-int8": lambda p: OnnxLM(p / "model.onnx"),
    "gguf-f16": lambda p: GgufLM(p),
    "gguf-q8_0": lambda p: GgufLM(p),
    "gguf-q4_k_m": lambda p: GgufLM(p),
}


def generate_text(
    prompt: str, *, artifact: str, fmt: str, max_new_tokens: int = 64, out_dir: Path | None = None
) -> tuple[str, float]:
    from transformers import AutoTokenizer

    root = Path(out_dir or artifacts_dir()) / artifact
    if not root.is_dir():
        raise ArtifactError(
            f"no artifact {artifact!r} in {root.parent}; build it with `make export`"
        )
    manifest = Manifest.load(root)
    entry = manifest.artifact(fmt)
    if entry.status == "skipped":
        raise ArtifactError(f"{fmt} was skipped at export: {entry.parity.get('skipped')}")
    verify(root, entry)
    tokenizer = AutoTokenizer.from_pretrained(root / "hf")
    ids = tokenizer(render_chat([{"role": "user", "content": prompt}]), add_special_tokens=False)
    lm = LOADERS[fmt](root / entry.path)
    try:
        t = time.perf_counter()
        out = lm.greedy(ids["input_ids"], max_new_tokens, eos=tokenizer.eos_token_id)
        dt = time.perf_counter() - t
    finally:
        lm.close()
    return tokenizer.decode(out, skip_special_tokens=True).strip(), len(out) / max(dt, 1e-9)
