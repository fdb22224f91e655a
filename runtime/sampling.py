"""Next-token choice from a logits vector: greedy, or temperature + top-k + top-p, with a
repetition penalty. numpy only, one (V,) vector per step.

Example: `balabol generate --temperature 0.8 --top-p 0.9 "Tell me a joke"`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class Sampler:
    def __init__(
        self,
        *,
        temperature: float,
        top_k: int,
        top_p: float,
        repetition_penalty: float,
        seed: int | None,
    ):
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.repetition_penalty = repetition_penalty
        self.rng = np.random.default_rng(seed)

    def __call__(self, logits: np.ndarray, history: Iterable[int] = ()) -> int:
        logits = np.asarray(logits, dtype=np.float32)
        if self.repetition_penalty != 1.0:
            seen = np.fromiter(set(history), dtype=np.int64)
            if seen.size:
                logits = logits.copy()
                vals = logits[seen]
                # CTRL-style: shrink positive logits, push negative ones further down
                logits[seen] = np.where(
                    vals > 0, vals / self.repetition_penalty, vals * self.repetition_penalty
                )
        if self.temperature == 0:
            return int(logits.argmax())
        k = min(self.top_k, logits.size) if self.top_k > 0 else logits.size
        idx = np.argpartition(-logits, k - 1)[:k] if k < logits.size else np.arange(logits.size)
        top = logits[idx] / self.temperature
        order = np.argsort(-top)
        idx, top = idx[order], top[order]
        probs = np.exp(top - top[0])
        probs /= probs.sum()
        if self.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), self.top_p) + 1)
            idx, probs = idx[:keep], probs[:keep] / probs[:keep].sum()
        return int(self.rng.choice(idx, p=probs))
