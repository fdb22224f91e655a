"""The torch backend: the merged fp32 `hf/` checkpoint with transformers, KV cache on.

Example: `balabol chat --format torch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from balabol.errors import ArtifactError, require
from runtime.base import DecoderBackend


@dataclass
class TorchBackend(DecoderBackend):
    model: object = None
    _past: object = field(default=None, repr=False)
    _pos: int = 0

    @classmethod
    def open(cls, path: Path, *, tokenizer, context_length: int, fmt: str, threads: int):
        torch = require("torch", extra="torch")
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        except (OSError, ValueError, RuntimeError) as e:
            raise ArtifactError(f"cannot load {path}: {e}; re-export with --force") from e
        return cls(
            tokenizer=tokenizer,
            context_length=context_length,
            format=fmt,
            eos_ids=frozenset({tokenizer.eos_token_id}),
            model=model,
        )

    def _forward(self, ids: list[int]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(torch.tensor([ids]), past_key_values=self._past, use_cache=True)
        self._past = out.past_key_values
        return out.logits[0, -1].float().numpy()

    def _prefill(self, ids, key=None):
        self._past = None
        return self._forward(ids)

    def _step(self, token):
        return self._forward([token])

    def close(self):
        self.model, self._past = None, None
