"""`balabol train --arch lstm`: the recurrent baseline (balabol/lstm.py) trained from scratch
with its own BPE tokenizer -> models/NAME/ (config.json, model.safetensors, tokenizer).

`balabol export --base models/NAME` traces it to ONNX with explicit (h, c) state inputs and
outputs (export/lstm.py); the runtime decodes it one token at a time carrying that state.

Example: `balabol train --arch lstm --data data/jokes --name jokes-lstm --n-embd 512`
"""

from __future__ import annotations

from balabol import lstm
from training.baselines.spec import ArchSpec

DEFAULTS = {
    "n_layer": 2,
    "n_embd": 512,
    "dropout": 0.1,
    "lr": 2e-3,
    "max_length": 512,
}


def build(cfg, tokenizer):
    config = lstm.LstmConfig(
        vocab_size=len(tokenizer),
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        dropout=cfg.dropout,
        context_length=cfg.max_length,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return lstm.build(config)


def describe(model) -> str:
    c = model.config
    return f"LSTM, {c.n_layer} layers x {c.n_embd} wide, vocabulary {c.vocab_size}"


SPEC = ArchSpec("lstm", "lstm", DEFAULTS, build, lstm.save, describe)
