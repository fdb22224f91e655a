"""Quality per format: perplexity and bits per byte on the shipped held-out text, read through
the runtime backend that serves the format (runtime/score.py)."""

from __future__ import annotations

import math

from balabol.manifest import FORMATS
from balabol.prompt import encode_text
from benchmarks.conftest import RESULTS


def test_quality(bench, fmt):
    from export.parity import text
    from runtime.loader import load
    from runtime.score import perplexity

    backend = load(bench["manifest"].name, fmt, root=bench["root"])
    tok = backend.tokenizer  # hf/tokenizer.json: the ids transformers gives
    # with the model's own <bos> (Gemma), as served; at most the context the bot gives it
    ids = encode_text(tok, text("heldout_en.txt"))[: min(512, backend.context_length)]
    try:
        ppl = perplexity(backend, ids)
    finally:
        backend.close()
    n_bytes = len(tok.decode(ids[1:]).encode("utf-8"))
    bpb = (len(ids) - 1) * math.log(ppl) / math.log(2) / n_bytes
    RESULTS["formats"].setdefault(fmt, {})["quality"] = {"ppl": ppl, "bits_per_byte": bpb}
    assert fmt in FORMATS and ppl > 1
