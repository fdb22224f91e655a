"""The llama.cpp backend (llama-cpp-python's low-level API) for the GGUF files.

Each chat (`key`) keeps its KV state between turns, in a slot of runtime/gguf_engine.py or
saved to host memory, so the next turn reads only its new message: time to first token
grows with the new message, not the history or the number of users. Logits are read
straight from llama.cpp's buffer. `logits` (scoring: the parity gate, `balabol eval`) reads
every position's logits from the same context, a batch at a time.

Example: `balabol chat --format gguf-q4_k_m`.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from balabol.errors import ArtifactError
from runtime.base import DecoderBackend
from runtime.gguf_engine import GgufEngine, Slot
from runtime.kvcache import SOLO, StateCache, budget_bytes

GGUF_MAGIC = b"GGUF"


def check_gguf_header(path: Path) -> None:
    """Refuse what would make llama.cpp abort: not a GGUF, or an unknown version."""
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[:4] != GGUF_MAGIC:
        raise ArtifactError(f"{path} is not a GGUF file (bad magic {head[:4]!r}); re-export it")
    version = int.from_bytes(head[4:8], "little")
    if version not in (2, 3):
        raise ArtifactError(f"{path} has GGUF version {version}; this llama.cpp reads 2 and 3")


@dataclass
class GgufBackend(DecoderBackend):
    engine: GgufEngine | None = None
    _slot: Slot | None = None

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        tokenizer,
        context_length: int,
        fmt: str,
        threads: int,
        parallel: int = 1,
        cache: StateCache | None = None,
    ):
        check_gguf_header(path)
        engine = GgufEngine(
            path,
            n_slots=parallel,
            n_ctx_per_slot=context_length,
            threads=threads,
            cache=cache if cache is not None else StateCache(budget_bytes()),
        )
        return cls(
            tokenizer=tokenizer,
            context_length=engine.n_ctx_per_slot,
            format=fmt,
            eos_ids=frozenset({tokenizer.eos_token_id}),
            engine=engine,
        )

    def _prefill(self, ids, key: Hashable | None = None):
        self._end()
        slot = self._slot = self.engine.claim(SOLO if key is None else key, ids)
        self.reused = slot.reused
        return self.engine.prefill(slot, ids)

    def _step(self, token) -> np.ndarray:
        (logits,) = self.engine.decode([(self._slot, [token], True)])
        return logits

    def _end(self, *, failed: bool = False) -> None:
        if self._slot is not None:
            self.engine.release(self._slot, keep=not failed)
            self._slot = None

    def logits(self, ids) -> np.ndarray:
        """(T, V) logits at every position of ids, from an empty slot (nothing reused)."""
        self._end()
        slot = self.engine.claim(None, [])  # a fresh slot: key None reuses nothing
        try:
            return self.engine.score(slot, list(ids))
        finally:
            self.engine.release(slot, keep=False)

    def reset(self):
        """Forget every cached chat state (benchmarks measure a cold prompt)."""
        self._end()
        for slot in self.engine.slots:
            if slot.key is not None:
                self.engine.forget(slot.key)
        self.engine.cache.clear()

    def close(self):
        if self.engine is not None:
            self._slot = None
            self.engine.close()
            self.engine = None
