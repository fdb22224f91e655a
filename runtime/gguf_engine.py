"""Several chats in one llama.cpp context: a KV cache per chat and one `llama_decode` for
the next token of every running chat.

The context holds `n_slots` sequences (llama.cpp `n_seq_max`, each with its own
`n_ctx_per_slot` cells). A chat is served in a slot; when it ends, its state stays there,
so the chat's next turn reads only the new tokens. A slot wanted by another chat first saves
the old chat's state to host memory (`llama_state_seq_get_data`, into
runtime/kvcache.StateCache, least recently used out); the chat comes back with
`llama_state_seq_set_data`. Measured on 2 cores (issue #15): 4 interleaved chats, 6th turn,
time to first token 737 ms with one shared cache vs 67 ms served alone.

Models with sliding-window attention (Gemma-3) keep a full-size window cache (`swa_full`),
since a window cache cannot be cut back to an older prefix.

A saved state is restored byte for byte, so a chat answers the same alone, interleaved,
batched or after a trip to host memory. A state dropped from the cache is read again in one
batch, and llama.cpp's logits depend on how a history was batched (its server says the same
of `cache_prompt`): on SmolLM2 Q4_1 a reused history and a re-read one differ by up to ~1 in
the logits, enough to change a near-tied greedy token later in a reply.

Example: `BALABOL_PARALLEL=4 balabol bot` serves four chats per decode step through this.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from balabol.errors import ArtifactError, ConfigError, require
from runtime.kvcache import Saved, StateCache, common_prefix

N_BATCH = 512  # tokens per llama_decode call (prompt chunks are cut to fit)


@dataclass
class Slot:
    seq: int  # the llama.cpp sequence id
    key: Hashable | None = None  # whose state is in it
    ids: list[int] = field(default_factory=list)  # the tokens whose KV it holds
    busy: bool = False
    used: int = 0  # last use, for least-recently-used choice
    reused: int = 0  # prompt tokens reused at the last claim


class GgufEngine:
    """Owns the llama.cpp model, context and batch (closed together by `close`)."""

    def __init__(
        self,
        path: Path,
        *,
        n_slots: int,
        n_ctx_per_slot: int,
        threads: int,
        cache: StateCache,
    ):
        self.llama_cpp = lc = require("llama_cpp", extra="runtime")
        from llama_cpp import _internals
        from llama_cpp._logger import set_verbose

        set_verbose(False)  # llama.cpp's own log (model and context details) only on errors

        if n_slots < 1:
            raise ConfigError(f"n_slots {n_slots} must be ≥ 1")
        self._stack = contextlib.ExitStack()
        try:
            mparams = lc.llama_model_default_params()
            self.model = self._stack.enter_context(
                contextlib.closing(
                    _internals.LlamaModel(path_model=str(path), params=mparams, verbose=False)
                )
            )
            cparams = lc.llama_context_default_params()
            cparams.n_ctx = n_ctx_per_slot * n_slots
            cparams.n_batch = cparams.n_ubatch = N_BATCH
            cparams.n_seq_max = n_slots
            cparams.n_threads = cparams.n_threads_batch = threads
            cparams.kv_unified = False  # each chat its own cells: no shared prefix to gain
            # a sliding-window cache keeps only the last window: it cannot be cut back to a
            # shared prefix, so such models (Gemma-3) keep a full-size one
            self.sliding_window = lc.llama_model_n_swa(self.model.model) > 0
            cparams.swa_full = self.sliding_window
            cparams.no_perf = True
            self.ctx = self._stack.enter_context(
                contextlib.closing(
                    _internals.LlamaContext(model=self.model, params=cparams, verbose=False)
                )
            )
        except ValueError as e:
            self._stack.close()
            raise ArtifactError(f"llama.cpp cannot load {path} ({e}); re-export it") from e
        self.n_ctx_per_slot = lc.llama_n_ctx(self.ctx.ctx) // n_slots
        self.n_vocab = self.model.n_vocab()
        self.mem = lc.llama_get_memory(self.ctx.ctx)
        self.batch = lc.llama_batch_init(N_BATCH, 0, 1)
        self._stack.callback(lc.llama_batch_free, self.batch)
        self.slots = [Slot(seq) for seq in range(n_slots)]
        self.n_batch = N_BATCH
        self.cache = cache
        self.lock = threading.RLock()  # one llama_decode at a time; slots change under it
        self._clock = 0

    # --- slots ---------------------------------------------------------------------------
    def claim(self, key: Hashable, ids: Sequence[int]) -> Slot:
        """A free slot holding the longest reusable prefix of `ids` for `key`; the caller
        feeds `ids[slot.reused:]` next. Raises when every slot is busy."""
        with self.lock:
            self._clock += 1
            free = [s for s in self.slots if not s.busy]
            if not free:
                raise ConfigError("every llama.cpp slot is busy; wait for a reply to end")
            slot = next((s for s in free if s.key == key and key is not None), None)
            if slot is None:
                slot = min(free, key=lambda s: (s.key is not None, s.used))
                self._evict(slot)
                self._restore(slot, key)
            slot.key, slot.busy, slot.used = key, True, self._clock
            # keep at least the last prompt token to run: its logits start the reply
            reuse = key is not None and self.cache.budget > 0
            keep = common_prefix(slot.ids, list(ids[:-1])) if reuse else 0
            self._truncate(slot, keep)
            slot.reused = len(slot.ids)
            return slot

    def release(self, slot: Slot, *, keep: bool = True) -> None:
        """The reply ended: the slot is free again, its state kept for the chat's next turn
        (or dropped, when the reply failed or reuse is off)."""
        with self.lock:
            slot.busy = False
            if not keep or self.cache.budget == 0:
                self._truncate(slot, 0)
                slot.key = None

    def forget(self, key: Hashable) -> None:
        """Drop a chat's saved state (e.g. the user reset the conversation)."""
        with self.lock:
            self.cache.discard(key)
            for s in self.slots:
                if s.key == key and not s.busy:
                    self._truncate(s, 0)
                    s.key = None

    def _truncate(self, slot: Slot, n: int) -> None:
        if n >= len(slot.ids):
            return
        if not self.llama_cpp.llama_memory_seq_rm(self.mem, slot.seq, n, -1):
            # a window cache cannot be cut back: start the sequence over (correct, slower)
            self.llama_cpp.llama_memory_seq_rm(self.mem, slot.seq, -1, -1)
            n = 0
        del slot.ids[n:]

    def _evict(self, slot: Slot) -> None:
        """Move the slot's chat state to host memory (if the budget allows), empty the slot."""
        if slot.key is not None and slot.ids and self.cache.budget > 0:
            lc = self.llama_cpp
            size = lc.llama_state_seq_get_size(self.ctx.ctx, slot.seq)
            buf = (ctypes.c_uint8 * size)()
            got = lc.llama_state_seq_get_data(self.ctx.ctx, buf, size, slot.seq)
            if got:
                self.cache.put(slot.key, Saved(list(slot.ids), buf, got))
        self._truncate(slot, 0)
        slot.key = None

    def _restore(self, slot: Slot, key: Hashable) -> None:
        saved = self.cache.pop(key) if key is not None else None
        if saved is None:
            return
        lc = self.llama_cpp
        if lc.llama_state_seq_set_data(self.ctx.ctx, saved.state, saved.nbytes, slot.seq):
            slot.ids = list(saved.ids)
        else:  # could not load: prefill from scratch
            lc.llama_memory_seq_rm(self.mem, slot.seq, -1, -1)

    # --- decoding ------------------------------------------------------------------------
    def decode(self, work: Sequence[tuple[Slot, Sequence[int], bool]]) -> list[np.ndarray | None]:
        """Append tokens to slots in one llama_decode; for each entry that asks, the (V,)
        logits after its last token (a copy). Entries: (slot, tokens, want_logits); at most
        N_BATCH tokens in all."""
        lc = self.llama_cpp
        n = sum(len(t) for _, t, _ in work)
        if n == 0:
            return [None] * len(work)
        if n > N_BATCH:
            raise ConfigError(f"{n} tokens in one decode step; at most {N_BATCH}")
        b = self.batch
        token = np.ctypeslib.as_array(b.token, shape=(n,))
        pos = np.ctypeslib.as_array(b.pos, shape=(n,))
        n_seq = np.ctypeslib.as_array(b.n_seq_id, shape=(n,))
        logits = np.ctypeslib.as_array(b.logits, shape=(n,))
        rows: list[int | None] = []
        i = 0
        with self.lock:
            for slot, toks, want in work:
                k = len(toks)
                if len(slot.ids) + k > self.n_ctx_per_slot:
                    raise ConfigError(
                        f"the chat needs {len(slot.ids) + k} tokens of context but a slot has "
                        f"{self.n_ctx_per_slot}"
                    )
                token[i : i + k] = toks
                pos[i : i + k] = np.arange(len(slot.ids), len(slot.ids) + k)
                n_seq[i : i + k] = 1
                for j in range(i, i + k):
                    b.seq_id[j][0] = slot.seq
                logits[i : i + k] = 0
                if want and k:
                    logits[i + k - 1] = 1
                rows.append(i + k - 1 if want and k else None)
                i += k
            b.n_tokens = n
            rc = lc.llama_decode(self.ctx.ctx, b)
            if rc != 0:
                # the batch did not enter the cache; the callers' slots stay as they were
                raise RuntimeError(f"llama_decode returned {rc} for {n} tokens")
            for slot, toks, _ in work:
                slot.ids.extend(toks)
            out = []
            for r in rows:
                if r is None:
                    out.append(None)
                    continue
                ptr = lc.llama_get_logits_ith(self.ctx.ctx, r)
                out.append(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy())
            return out

    def score(self, slot: Slot, ids: Sequence[int]) -> np.ndarray:
        """(T, V) logits at every position of ids appended to an empty slot."""
        lc, ids = self.llama_cpp, list(ids)
        if slot.ids or len(ids) > self.n_ctx_per_slot:
            raise ConfigError(
                f"cannot score {len(ids)} tokens in a slot of {self.n_ctx_per_slot} holding "
                f"{len(slot.ids)}; open the backend with a longer context_length"
            )
        out = np.empty((len(ids), self.n_vocab), dtype=np.float32)  # (T, V)
        b = self.batch
        with self.lock:
            for start in range(0, len(ids), self.n_batch):
                chunk = ids[start : start + self.n_batch]
                n = len(chunk)
                np.ctypeslib.as_array(b.token, shape=(n,))[:] = chunk
                np.ctypeslib.as_array(b.pos, shape=(n,))[:] = np.arange(start, start + n)
                np.ctypeslib.as_array(b.n_seq_id, shape=(n,))[:] = 1
                np.ctypeslib.as_array(b.logits, shape=(n,))[:] = 1  # every position
                for j in range(n):
                    b.seq_id[j][0] = slot.seq
                b.n_tokens = n
                if (rc := lc.llama_decode(self.ctx.ctx, b)) != 0:
                    raise RuntimeError(f"llama_decode returned {rc} for {n} tokens")
                slot.ids.extend(chunk)
                for j in range(n):
                    row = lc.llama_get_logits_ith(self.ctx.ctx, j)
                    out[start + j] = np.ctypeslib.as_array(row, shape=(self.n_vocab,))
        return out

    def prefill(self, slot: Slot, ids: Sequence[int]) -> np.ndarray:
        """Feed the rest of a prompt to one slot (in N_BATCH chunks); its last logits."""
        rest = list(ids[len(slot.ids) :])
        assert slot.ids == list(ids[: len(slot.ids)]), "claim() keeps only a prefix of ids"
        out = None
        for s in range(0, len(rest), N_BATCH):
            chunk = rest[s : s + N_BATCH]
            (out,) = self.decode([(slot, chunk, s + N_BATCH >= len(rest))])
        return out

    def close(self) -> None:
        self._stack.close()
