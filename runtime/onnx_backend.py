"""The onnxruntime backend: a lean decode loop over optimum's decoder-with-past graph.

The KV cache never leaves onnxruntime: each step's `present.*` outputs are bound (IO
binding) as the next step's `past_key_values.*` inputs, so there is no per-step Python
copy of the cache, only of the (V,) logits row.

Example: `balabol chat --format onnx-int8`.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from balabol.errors import ArtifactError, require
from runtime.base import DecoderBackend
from runtime.kvcache import SOLO, Saved, StateCache, budget_bytes, common_prefix


def open_session(path: Path, threads: int):
    """An onnxruntime CPU session, or an ArtifactError naming the file and the fix."""
    ort = require("onnxruntime", extra="runtime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise ArtifactError(
            f"onnxruntime cannot load {path}: {str(e).splitlines()[0][:200]}; the file is "
            "corrupt or truncated, re-export with `balabol export --force`"
        ) from e


@dataclass
class OnnxBackend(DecoderBackend):
    session: object = None
    cache: StateCache | None = None  # chats' past key/values between turns
    _past: dict = field(default_factory=dict, repr=False)
    _pos: int = 0
    _mask: np.ndarray | None = None
    _key: Hashable | None = None  # the chat being answered
    _ids: list[int] = field(default_factory=list, repr=False)  # the tokens in _past

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        tokenizer,
        context_length: int,
        fmt: str,
        threads: int,
        cache: StateCache | None = None,
    ):
        sess = open_session(path, threads)
        return cls(
            tokenizer=tokenizer,
            context_length=context_length,
            format=fmt,
            eos_ids=frozenset({tokenizer.eos_token_id}),
            session=sess,
            cache=cache if cache is not None else StateCache(budget_bytes()),
        )

    def __post_init__(self):
        if self.session is None:
            return
        import onnxruntime as ort

        self._ort = ort
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._has_mask = "attention_mask" in inputs
        self._has_pos = "position_ids" in inputs
        self._past_names = [n for n in inputs if n.startswith("past_key_values.")]
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._present = {
            n: self._outputs.index(n.replace("past_key_values.", "present."))
            for n in self._past_names
        }
        self._empty = {
            n: ort.OrtValue.ortvalue_from_numpy(
                np.zeros((1, inputs[n].shape[1], 0, inputs[n].shape[3]), dtype=np.float32)
            )
            for n in self._past_names
        }
        self._mask = np.ones((1, self.context_length), dtype=np.int64)

    def _run(self, ids: list[int], past: dict, pos: int) -> tuple[np.ndarray, dict]:
        """(T, V) logits of ids after `pos` cached positions, and the cache after them."""
        s = len(ids)
        b = self.session.io_binding()
        b.bind_cpu_input("input_ids", np.asarray([ids], dtype=np.int64))
        if self._has_mask:
            mask = self._mask if pos + s <= self._mask.shape[1] else np.ones((1, pos + s), np.int64)
            b.bind_cpu_input("attention_mask", mask[:, : pos + s])
        if self._has_pos:
            b.bind_cpu_input("position_ids", np.arange(pos, pos + s, dtype=np.int64)[None])
        for n in self._past_names:
            b.bind_ortvalue_input(n, past[n])
        for n in self._outputs:
            b.bind_output(n, "cpu")
        self.session.run_with_iobinding(b)
        outs = b.get_outputs()
        return outs[0].numpy()[0], {n: outs[i] for n, i in self._present.items()}

    def _advance(self, ids: list[int]) -> np.ndarray:
        logits, self._past = self._run(ids, self._past, self._pos)
        self._pos += len(ids)
        self._ids.extend(ids)
        return logits[-1]

    def _prefill(self, ids, key=None):
        """The prompt after the longest prefix whose past the chat `key` kept (issue #15: without
        it every turn re-read the whole history, 824 ms at the 6th turn of a short chat)."""
        self._end()
        self._key = SOLO if key is None else key
        self._past, self._pos, self._ids = dict(self._empty), 0, []
        saved = (
            self.cache.pop(self._key) if self.cache is not None and self.cache.budget > 0 else None
        )
        if saved is not None:
            # keep at least the last prompt token to run: its logits start the reply
            n = common_prefix(saved.ids, list(ids[:-1]))
            if n > 0:
                self._past = saved.state if n == len(saved.ids) else self._cut(saved.state, n)
                self._pos, self._ids = n, list(ids[:n])
        self.reused = self._pos
        return self._advance(list(ids[self._pos :]))

    def _cut(self, past: dict, n: int) -> dict:
        """The first n positions of a past (each (1, kv_heads, T, head_dim))."""
        ort = self._ort
        return {
            k: ort.OrtValue.ortvalue_from_numpy(v.numpy()[:, :, :n].copy()) for k, v in past.items()
        }

    def _end(self, *, failed: bool = False) -> None:
        """Keep the chat's past for its next turn (not after an error: it may be half-made)."""
        if (
            self._key is not None
            and not failed
            and self.cache is not None
            and self.cache.budget > 0
        ):
            nbytes = sum(4 * int(np.prod(v.shape())) for v in self._past.values())
            self.cache.put(self._key, Saved(list(self._ids), self._past, nbytes))
        self._key, self._past, self._ids = None, dict(self._empty), []

    def reset(self) -> None:
        """Forget every chat's past (benchmarks measure a cold prompt)."""
        self._end(failed=True)
        if self.cache is not None:
            self.cache.clear()

    def _step(self, token):
        return self._advance([token])

    def logits(self, ids):
        # the decode state (_past, _pos) is left alone: the next _prefill starts afresh anyway
        return self._run(list(ids), self._empty, 0)[0]

    def close(self):
        self.session, self._past, self._key = None, {}, None
        if self.cache is not None:
            self.cache.clear()
