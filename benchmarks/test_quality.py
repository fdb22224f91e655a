"""Quality per format: perplexity and bits per byte on the shipped held-out text."""

from __future__ import annotations

import math

from balabol.manifest import FORMATS
from balabol.prompt import encode_text
from benchmarks.conftest import RESULTS


def test_quality(bench, fmt):
    from transformers import AutoTokenizer

    from export.lstm import OnnxLstmLM, TorchLstmLM
    from export.parity import GgufLM, OnnxLM, TorchLM, perplexity, text

    base = bench["root"] / bench["manifest"].name
    entry = bench["manifest"].artifact(fmt)
    path = base / entry.path
    if bench["manifest"].architecture == "lstm":
        torch_lm, onnx_lm = TorchLstmLM, lambda p: OnnxLstmLM(p / "model.onnx")
    else:
        torch_lm, onnx_lm = TorchLM, lambda p: OnnxLM(p / "model.onnx")
    lm = {"torch": torch_lm, "onnx": onnx_lm, "onnx-int8": onnx_lm}.get(fmt, GgufLM)(path)
    tok = AutoTokenizer.from_pretrained(base / "hf")
    body = text("heldout_en.txt")
    ids = encode_text(tok, body)[:512]  # with the model's own <bos> (Gemma), as served
    try:
        ppl = perplexity(lm, ids)
    finally:
        lm.close()
    n_bytes = len(tok.decode(ids[1:]).encode("utf-8"))
    bpb = (len(ids) - 1) * math.log(ppl) / math.log(2) / n_bytes
    RESULTS["formats"].setdefault(fmt, {})["quality"] = {"ppl": ppl, "bits_per_byte": bpb}
    assert fmt in FORMATS and ppl > 1
