"""The Backend protocol, GenerationConfig, and the decode loop every backend shares.

A backend only knows how to turn token ids into next-token logits (`_prefill`, `_step`);
sampling, streaming text that never splits a character, stop strings, cancellation and
timing live here once.

Example: `balabol generate --format onnx-int8 --max-new-tokens 64 "Hello"`.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import numpy as np

from balabol.errors import ConfigError
from balabol.prompt import FEW_SHOT_STOP, FEW_SHOT_TEMPLATE, encode_chat, encode_text
from runtime.decoding import Decoding, Stats, TextStream  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class GenerationConfig:
    # The sampling defaults of every command and of the bot (bot/config.py reads them here).
    # The docstrings are the help of `balabol generate`'s and `balabol chat`'s flags.
    max_new_tokens: int = 256
    """reply length limit in tokens"""
    temperature: float = 0.7
    """0 = greedy"""
    top_k: int = 40
    """sample among the k likeliest tokens (0 = all)"""
    top_p: float = 0.95
    """nucleus sampling mass"""
    repetition_penalty: float = 1.1
    """1 = off"""
    seed: int | None = None
    """random seed, for reproducible sampling"""
    stop: tuple[str, ...] = ()
    """stop strings"""
    ignore_eos: bool = False
    """benchmarks: always produce max_new_tokens"""

    def __post_init__(self):
        checks = [
            ("max_new_tokens", self.max_new_tokens >= 1, "an integer ≥ 1"),
            ("temperature", 0 <= self.temperature <= 5, "between 0 (greedy) and 5"),
            ("top_k", self.top_k >= 0, "≥ 0 (0 = no limit)"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("repetition_penalty", 0.5 <= self.repetition_penalty <= 3, "between 0.5 and 3"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ConfigError(
                    f"--{name.replace('_', '-')} {getattr(self, name)!r} is invalid: must be {allowed}"
                )
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(f"--stop {self.stop!r} must be a list of non-empty strings")

    @classmethod
    def greedy(cls, max_new_tokens: int = 64) -> GenerationConfig:
        return cls(max_new_tokens=max_new_tokens, temperature=0, repetition_penalty=1.0)


DEFAULTS = GenerationConfig()
# A reply read once (`balabol generate` prints one and exits; the bot sends one Telegram
# message) is shorter by default than an interactive chat's turn (DEFAULTS.max_new_tokens):
# it arrives sooner on 2 cores and fits a phone screen.
SHORT_REPLY_TOKENS = 128


@runtime_checkable
class Backend(Protocol):
    format: str
    context_length: int

    def stream(
        self,
        messages: Sequence[Mapping[str, str]],
        config: GenerationConfig = ...,
        *,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]: ...

    def generate(
        self,
        messages: Sequence[Mapping[str, str]],
        config: GenerationConfig = ...,
        *,
        cancel: threading.Event | None = None,
    ) -> str: ...

    def close(self) -> None: ...


@dataclass
class DecoderBackend:
    """Shared loop. Subclasses set format/context_length and implement the three hooks."""

    tokenizer: object
    context_length: int
    format: str = "?"
    eos_ids: frozenset[int] = field(default_factory=frozenset)
    last_stats: Stats | None = None
    reused: int = 0  # prompt tokens the last _prefill did not recompute
    last_tokens: list[int] = field(default_factory=list)  # the last reply's token ids

    # --- hooks -------------------------------------------------------------------------
    def _prefill(self, ids: list[int], key: Hashable | None = None) -> np.ndarray:
        """Run the prompt; return (V,) logits of its last position. `key` names the chat:
        a backend that keeps a KV state per chat reuses the key's longest shared prefix
        (and reports how many tokens it reused in `self.reused`)."""
        raise NotImplementedError

    def _step(self, token: int) -> np.ndarray:
        """Append one token; return its (V,) next-token logits."""
        raise NotImplementedError

    def _end(self, *, failed: bool = False) -> None:
        """The reply ended (failed: by an error, so its state may be half-written)."""

    def close(self) -> None:
        pass

    def reset(self) -> None:
        """Forget any cached prompt (benchmarks measure a cold prompt)."""

    # --- shared ------------------------------------------------------------------------
    def encode_chat(self, messages, *, system: str | None = None) -> list[int]:
        # contents as plain text (a typed "<|im_end|>" is no control token), the model's own
        # leading <bos> once, if it has one
        return encode_chat(
            self.tokenizer, messages, system=system, template=self.tokenizer.chat_template
        )

    def request(self, messages, config: GenerationConfig) -> tuple[list[int], GenerationConfig]:
        """The prompt ids of a chat and the config to answer it with; a `str` instead of
        messages is plain text to continue (no chat template, no control token parsed)."""
        if isinstance(messages, str):
            return encode_text(self.tokenizer, messages), config
        if self.tokenizer.chat_template == FEW_SHOT_TEMPLATE:
            # a base model continues the transcript: its reply ends where the next turn starts
            config = replace(config, stop=(*config.stop, *FEW_SHOT_STOP))
        return self.encode_chat(messages), config

    def stream(
        self,
        messages,
        config: GenerationConfig = GenerationConfig(),
        *,
        cancel: threading.Event | None = None,
        key: Hashable | None = None,
    ) -> Iterator[str]:
        """The reply to a chat, streamed; `key` names the chat whose KV state to reuse."""
        ids, config = self.request(messages, config)
        return self.stream_ids(ids, config, cancel=cancel, key=key)

    def generate(
        self,
        messages,
        config: GenerationConfig = GenerationConfig(),
        *,
        cancel: threading.Event | None = None,
        key: Hashable | None = None,
    ) -> str:
        return "".join(self.stream(messages, config, cancel=cancel, key=key))

    def complete(
        self,
        text: str,
        config: GenerationConfig = GenerationConfig(),
        *,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """Plain continuation (for base, non-instruct models): no chat template, and no
        control token parsed from the text."""
        ids = encode_text(self.tokenizer, text)
        return self.stream_ids(ids, config, cancel=cancel)

    def stream_ids(
        self,
        ids: list[int],
        config: GenerationConfig,
        *,
        cancel: threading.Event | None = None,
        key: Hashable | None = None,
    ) -> Iterator[str]:
        """The single-stream loop: the model reads one token per step (runtime/decoding.py
        holds what a reply is; the batching scheduler drives the same `Decoding`)."""
        d = Decoding(
            self.tokenizer,
            ids,
            config,
            eos_ids=self.eos_ids,
            context_length=self.context_length,
        )
        failed = False
        try:
            self.reused = 0
            token = d.push(self._prefill(list(ids), key))
            d.cached_tokens = self.reused
            while True:
                if piece := d.take():
                    yield piece
                if token is None:
                    break
                if cancel is not None and cancel.is_set():
                    d.cancel()
                    break
                token = d.push(self._step(token))
            if piece := d.take():
                yield piece
        except GeneratorExit:  # the caller stopped reading: the state is still sound
            raise
        except BaseException:
            failed = True
            raise
        finally:
            self._end(failed=failed)
            self.last_stats, self.last_tokens = d.stats, d.out

    # --- scoring: the parity gate, `balabol eval` and the benchmarks (runtime/score.py) ---
    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """(T, V) float32 next-token logits at every position of one sequence, from a fresh
        state (no cached prompt is reused)."""
        raise NotImplementedError

    def logits_batch(
        self, rows: Sequence[Sequence[int]], positions: Sequence[Sequence[int]] | None = None
    ) -> list[np.ndarray]:
        """`logits` of several sequences; with `positions`, only those rows of each. Backends
        that can run sequences together (torch, with padding) override this."""
        out = []
        for i, ids in enumerate(rows):
            x = self.logits(ids)
            out.append(x if positions is None else x[np.asarray(positions[i], dtype=np.int64)])
        return out

    def greedy(
        self, ids: Sequence[int], max_new_tokens: int, *, stop_at_eos: bool = True
    ) -> list[int]:
        """The greedy continuation of ids, as token ids, from the decode loop that serves
        replies (KV cache or recurrent state). An end-of-turn token ends it and is not
        included; with stop_at_eos=False exactly max_new_tokens come (context permitting)."""
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            temperature=0,
            repetition_penalty=1.0,
            ignore_eos=not stop_at_eos,
        )
        for _ in self.stream_ids(list(ids), config):
            pass
        return list(self.last_tokens)

    def greedy_batch(self, rows: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
        """`greedy` of several prompts (torch overrides it with one left-padded batch)."""
        return [self.greedy(ids, max_new_tokens) for ids in rows]
