"""Export of the LSTM baseline: ONNX with explicit (h, c) state, int8, parity, manifest.

The graph takes `input_ids` (B, T) and the state `h0`, `c0` (n_layer, B, H) and returns
`logits` (B, T, V) and the state after the last token, `hn`, `cn`: the runtime prefills the
prompt from a zero state, then feeds one token and the previous state per step
(runtime/lstm_backend.py). Every file is checked against the torch model as any other
(export/parity.py), both read by the runtime's LSTM backends; llama.cpp has no LSTM, so the
GGUF formats are recorded as skipped.

Example: `balabol export --base models/jokes-lstm` (after `balabol train --arch lstm`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import time
import warnings
from pathlib import Path

from balabol import lstm
from balabol.architectures import ARCHITECTURES
from balabol.errors import BalabolError, ExportError, require
from balabol.manifest import Manifest
from export import merge
from export.parity import Reference, decode_speed, judge, measure, open_backend
from export.steps import Step, manifest_of

ARCH = ARCHITECTURES["lstm"]
INPUTS = ("input_ids", "h0", "c0")
OUTPUTS = ("logits", "hn", "cn")
OPSET = 17
# files of the trained model directory that make up hf/ (the torch reference)
MODEL_FILES = (lstm.CONFIG_FILE, lstm.WEIGHTS_FILE)


def export_onnx(model_dir: Path, out_dir: Path) -> Path:
    """Trace the model with a 2-token prompt and dynamic batch/sequence axes."""
    torch = require("torch", extra="export")
    model = lstm.load(model_dir)

    class Stateful(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, h0, c0):
            out = self.lm(input_ids, state=(h0, c0))
            return out.logits, out.state[0], out.state[1]

    h0, c0 = model.zero_state(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    batch = {1: "batch"}
    # the TorchScript exporter: the dynamo one needs onnxscript, which we do not ship
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Stateful(model).eval(),
            (torch.tensor([[1, 2]]), h0, c0),
            str(path),
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "logits": {0: "batch", 1: "sequence"},
                "h0": batch,
                "c0": batch,
                "hn": batch,
                "cn": batch,
            },
            opset_version=OPSET,
            dynamo=False,
        )
    if not path.is_file():
        raise ExportError(f"torch.onnx.export wrote no model.onnx in {out_dir}")
    _copy_tokenizer(model_dir, out_dir)
    return path


def export_int8(onnx_dir: Path, out_dir: Path) -> Path:
    """onnxruntime dynamic quantization: int8 weights for the LSTM, head and embedding."""
    require("onnxruntime", extra="runtime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    root = logging.getLogger()  # onnxruntime advises pre-processing on the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            onnx_dir / "model.onnx",
            path,
            op_types_to_quantize=["LSTM", "MatMul", "Gemm"],
            per_channel=False,
            weight_type=QuantType.QInt8,
        )
    finally:
        root.setLevel(level)
    _copy_tokenizer(onnx_dir, out_dir)
    return path


def _copy_tokenizer(src: Path, dst: Path) -> None:
    from export.onnx import TOKENIZER_PREFIXES

    for f in Path(src).iterdir():
        if f.name.startswith(TOKENIZER_PREFIXES) and not (dst / f.name).exists():
            shutil.copy2(f, dst / f.name)


def build(cfg, name: str, base: Path, spec, tmp: Path, log) -> Manifest:
    """export.pipeline's build step for an LSTM directory (the pipeline owns tmp and out)."""
    if not isinstance(base, Path):
        raise ExportError(f"--base {cfg.base}: an LSTM is exported from a local directory")
    steps: dict[str, Step] = {}

    # 1. hf/: the trained weights, config and tokenizer = the reference
    t = time.perf_counter()
    hf = tmp / "hf"
    hf.mkdir(parents=True)
    for f in MODEL_FILES:
        shutil.copy2(base / f, hf / f)
    tokenizer = merge.load_tokenizer(base, None)
    tokenizer.save_pretrained(hf)
    ctx = lstm.LstmConfig.from_dict(_json(hf / lstm.CONFIG_FILE)).context_length
    # the state has no length limit; the held-out text is scored as for other models
    n_ctx = max(ctx, 1024)  # bounds only the reference's greedy decoding
    reference = open_backend(hf, "torch", hf=hf, context_length=n_ctx, architecture=ARCH.name)
    ref = Reference.build(reference, tokenizer)
    torch_speed = decode_speed(reference, ref)
    reference.close()
    steps["torch"] = Step(
        "torch", "passed", time.perf_counter() - t, {"ppl": round(ref.ppl, 4)}, speed=torch_speed
    )
    log(f"[hf] done: perplexity {ref.ppl:.2f} on the held-out text")

    def attempt(fmt: str, make) -> None:
        t0 = time.perf_counter()
        log(f"[{fmt}] building ...")
        try:
            path = make()
            lm = open_backend(path.parent, fmt, hf=hf, context_length=n_ctx, architecture=ARCH.name)
            try:
                numbers = measure(lm, ref)
                why = judge(numbers, cfg.gates[fmt])
                speed = None if why else decode_speed(lm, ref)  # what `auto` ranks by
            finally:
                lm.close()
        except BalabolError as e:
            steps[fmt] = Step(fmt, "failed", time.perf_counter() - t0, {"failed": [str(e)]})
            log(f"[{fmt}] FAILED: {e}")
            return
        if why:
            numbers["failed"] = why
        status = "failed" if why else "passed"
        steps[fmt] = Step(fmt, status, time.perf_counter() - t0, numbers, speed=speed)
        log(f"[{fmt}] {status}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))

    # 2. ONNX fp32 with state, then int8 from it
    if "onnx" in cfg.formats or "onnx-int8" in cfg.formats:
        attempt("onnx", lambda: export_onnx(hf, tmp / "onnx"))
    if "onnx-int8" in cfg.formats and (tmp / "onnx" / "model.onnx").is_file():
        attempt("onnx-int8", lambda: export_int8(tmp / "onnx", tmp / "onnx-int8"))
    if "onnx" not in cfg.formats:
        shutil.rmtree(tmp / "onnx", ignore_errors=True)
        steps.pop("onnx", None)
    for fmt in cfg.formats:
        if not ARCH.has_format(fmt):
            steps[fmt] = Step(fmt, "skipped", 0.0, {"skipped": ARCH.no_format_reason})
            log(f"[{fmt}] skipped: {ARCH.no_format_reason}")

    # 3. the manifest
    return manifest_of(cfg, name, ARCH.name, steps, tmp, tokenizer, ctx)


def _json(path: Path) -> dict:
    import json

    return json.loads(path.read_text(encoding="utf-8"))
