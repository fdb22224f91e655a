"""The LSTM backends: the ONNX graph of export/lstm.py (or the torch model in hf/) decoded
one token at a time, carrying the recurrent state (h, c) instead of a KV cache.

Sampling, streaming and stop strings come from the shared loop (runtime/base.py); the loader
picks these backends for artifacts whose manifest says architecture "lstm".

Example: `balabol generate --artifact jokes-lstm --format onnx "Tell me a joke"`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from balabol.errors import require
from runtime.base import DecoderBackend


@dataclass
class LstmOnnxBackend(DecoderBackend):
    session: object = None
    _state: tuple = field(default=(), repr=False)

    @classmethod
    def open(cls, path: Path, *, tokenizer, context_length: int, fmt: str, threads: int):
        from runtime.onnx_backend import open_session

        sess = open_session(path / "model.onnx", threads)
        return cls(
            tokenizer=tokenizer,
            context_length=context_length,
            format=fmt,
            eos_ids=frozenset({tokenizer.eos_token_id}),
            session=sess,
        )

    def __post_init__(self):
        if self.session is None:
            return
        h0 = next(i for i in self.session.get_inputs() if i.name == "h0")
        zeros = np.zeros((h0.shape[0], 1, h0.shape[2]), dtype=np.float32)  # (L, 1, H)
        self._zero = (zeros, zeros)

    def _run(self, ids: list[int], state: tuple) -> tuple[np.ndarray, tuple]:
        """(T, V) logits of ids from `state`, and the state after them."""
        h, c = state
        logits, h, c = self.session.run(
            ["logits", "hn", "cn"],
            {"input_ids": np.asarray([ids], dtype=np.int64), "h0": h, "c0": c},
        )
        return logits[0], (h, c)

    def _prefill(self, ids, key=None):
        logits, self._state = self._run(ids, self._zero)
        return logits[-1]

    def _step(self, token):
        logits, self._state = self._run([token], self._state)
        return logits[-1]

    def logits(self, ids):
        return self._run(list(ids), self._zero)[0]

    def close(self):
        self.session, self._state = None, ()


@dataclass
class LstmTorchBackend(DecoderBackend):
    model: object = None
    _state: object = field(default=None, repr=False)

    @classmethod
    def open(cls, path: Path, *, tokenizer, context_length: int, fmt: str, threads: int):
        torch = require("torch", extra="torch")
        from balabol import lstm

        torch.set_num_threads(threads)
        return cls(
            tokenizer=tokenizer,
            context_length=context_length,
            format=fmt,
            eos_ids=frozenset({tokenizer.eos_token_id}),
            model=lstm.load(path),
        )

    def _forward(self, ids: list[int], state) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(torch.tensor([ids]), state=state)
        self._state = out.state
        return out.logits[0, -1].numpy()

    def logits(self, ids):
        import torch

        with torch.inference_mode():
            return self.model(torch.tensor([list(ids)])).logits[0].float().numpy()

    def _prefill(self, ids, key=None):
        return self._forward(ids, None)

    def _step(self, token):
        return self._forward([token], self._state)

    def close(self):
        self.model, self._state = None, None
