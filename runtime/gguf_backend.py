"""The llama.cpp backend (llama-cpp-python) for the GGUF files.

Logits come straight from llama.cpp's buffer (no per-step list copies), and a new prompt
that extends the previous one (the next turn of a chat) reuses the KV cache for the
shared prefix, so time to first token grows with the new message, not the history.
`logits` (scoring: the parity gate, `balabol eval`) reads every position's logits from the
same context, a batch at a time, rather than from a second model loaded with logits_all.

Example: `balabol chat --format gguf-q4_k_m`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from balabol.errors import ArtifactError, ConfigError, require
from runtime.base import DecoderBackend

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
    llm: object = None

    @classmethod
    def open(cls, path: Path, *, tokenizer, context_length: int, fmt: str, threads: int):
        llama_cpp = require("llama_cpp", extra="runtime")
        check_gguf_header(path)
        try:
            llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=context_length,
                n_threads=threads,
                n_threads_batch=threads,
                n_batch=512,
                logits_all=False,
                verbose=False,
            )
        except ValueError as e:
            raise ArtifactError(f"llama.cpp cannot load {path} ({e}); re-export it") from e
        return cls(
            tokenizer=tokenizer,
            context_length=context_length,
            format=fmt,
            eos_ids=frozenset({tokenizer.eos_token_id}),
            llm=llm,
        )

    def _logits(self) -> np.ndarray:
        import llama_cpp

        ptr = llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),))

    def _prefill(self, ids):
        llm = self.llm
        # keep the KV cache of the longest common prefix (at least one token is re-run)
        old = llm.input_ids[: llm.n_tokens]
        n = min(len(old), len(ids) - 1)
        eq = old[:n] == np.asarray(ids[:n], dtype=old.dtype)
        same = n if eq.all() else int(np.argmin(eq))
        llm.n_tokens = same  # eval() drops the cache beyond n_tokens
        llm.eval(ids[same:])
        return self._logits()

    def _step(self, token):
        self.llm.eval([token])
        return self._logits()

    def logits(self, ids):
        import llama_cpp

        llm, ids = self.llm, list(ids)
        if len(ids) > llm.n_ctx():
            raise ConfigError(
                f"cannot score {len(ids)} tokens with a llama.cpp context of {llm.n_ctx()}; "
                "open the backend with a longer context_length"
            )
        ctx, n_vocab = llm._ctx.ctx, llm.n_vocab()
        out = np.empty((len(ids), n_vocab), dtype=np.float32)  # (T, V)
        # from an empty cache; input_ids/n_tokens track what the cache holds, so the next
        # _prefill reuses exactly the prefix that is really there
        llm.reset()
        llm._ctx.kv_cache_clear()
        for start in range(0, len(ids), llm.n_batch):
            chunk = ids[start : start + llm.n_batch]
            llm._batch.set_batch(batch=chunk, n_past=start, logits_all=True)  # every position
            llm._ctx.decode(llm._batch)
            for i in range(len(chunk)):
                row = llama_cpp.llama_get_logits_ith(ctx, i)
                out[start + i] = np.ctypeslib.as_array(row, shape=(n_vocab,))
            llm.input_ids[start : start + len(chunk)] = chunk
            llm.n_tokens = start + len(chunk)
        return out

    def reset(self):
        self.llm.reset()

    def close(self):
        if self.llm is not None:
            self.llm.close()
            self.llm = None
