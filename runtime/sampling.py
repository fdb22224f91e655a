"""Next-token choice from a logits vector: greedy, or temperature + top-k + top-p, with a
repetition penalty. numpy only, one (V,) vector per step.

Example: `balabol generate --temperature 0.8 --top-p 0.9 "Tell me a joke"`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class Seen:
    """The distinct token ids a reply has read so far (what the repetition penalty looks at),
    kept as it grows: a step adds one token instead of rebuilding a set over the history."""

    def __init__(self, ids: Iterable[int] = ()):
        self._set: set[int] = set(ids)
        self._new: list[int] = []
        self._ids = np.fromiter(self._set, dtype=np.int64, count=len(self._set))

    def add(self, token: int) -> None:
        if token not in self._set:
            self._set.add(token)
            self._new.append(token)

    @property
    def ids(self) -> np.ndarray:
        if self._new:  # appended in bulk when read: one concatenate per new distinct token
            self._ids = np.concatenate([self._ids, np.asarray(self._new, dtype=np.int64)])
            self._new.clear()
        return self._ids


def top_k_ids(logits: np.ndarray, k: int) -> np.ndarray:
    """The ids of the k largest logits, largest first (ties: the lower id first).

    A full `argpartition` reads and shuffles all V logits (~0.2 ms at V=49152, each step);
    the k-th largest value is at least the smallest of the maxima of k blocks, so only the
    few logits above that bound are partitioned."""
    n = logits.size // k * k
    bound = logits[:n].reshape(k, -1).max(axis=1).min()
    cand = np.flatnonzero(logits >= bound)  # ≥ k of them, in id order
    if cand.size > k:
        cand = cand[np.argpartition(-logits[cand], k - 1)[:k]]
        cand.sort()  # id order again, so equal logits rank by id below
    return cand[np.argsort(-logits[cand], kind="stable")]


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

    def __call__(self, logits: np.ndarray, history: Seen | Iterable[int] = ()) -> int:
        """The next token. history: the ids read so far (a `Seen`, kept by the caller across
        steps, or any iterable of ids)."""
        logits = np.asarray(logits, dtype=np.float32)
        if self.repetition_penalty != 1.0:
            seen = (history if isinstance(history, Seen) else Seen(history)).ids
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
        if k < logits.size:
            idx = top_k_ids(logits, k)
            top = logits[idx] / self.temperature
        else:
            top = logits / self.temperature
            order = np.argsort(-top)
            idx, top = order, top[order]
        probs = np.exp(top - top[0])
        probs /= probs.sum()
        if self.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), self.top_p) + 1)
            idx, probs = idx[:keep], probs[:keep] / probs[:keep].sum()
        return int(self.rng.choice(idx, p=probs))
