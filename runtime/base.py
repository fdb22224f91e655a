"""The Backend protocol, GenerationConfig, and the decode loop every backend shares.

A backend only knows how to turn token ids into next-token logits (`_prefill`, `_step`);
sampling, streaming text that never splits a character, stop strings, cancellation and
timing live here once.

Example: `balabol generate --format onnx-int8 --max-new-tokens 64 "Hello"`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import numpy as np

from balabol.errors import ConfigError
from balabol.prompt import FEW_SHOT_STOP, FEW_SHOT_TEMPLATE, encode_chat, encode_text
from runtime.sampling import Sampler


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 256
    temperature: float = 0.7  # 0 = greedy
    top_k: int = 40  # 0 = no limit
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # benchmarks: always produce max_new_tokens

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


@dataclass(frozen=True)
class Stats:
    prompt_tokens: int
    new_tokens: int
    ttft: float  # seconds from call to first token chosen
    seconds: float  # total
    stopped_by: str  # eos | stop | length | cancel

    @property
    def tokens_per_second(self) -> float:
        decode = self.seconds - self.ttft
        return (self.new_tokens - 1) / decode if self.new_tokens > 1 and decode > 0 else 0.0


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


class TextStream:
    """Incremental detokenization: emits only complete characters (no split UTF-8)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        now = decode(self.ids[self.prefix :], skip_special_tokens=True)
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return now[len(before) :]
        return ""


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of text could be the start of a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                best = max(best, n)
                break
    return best


@dataclass
class DecoderBackend:
    """Shared loop. Subclasses set format/context_length and implement the three hooks."""

    tokenizer: object
    context_length: int
    format: str = "?"
    eos_ids: frozenset[int] = field(default_factory=frozenset)
    last_stats: Stats | None = None

    # --- hooks -------------------------------------------------------------------------
    def _prefill(self, ids: list[int]) -> np.ndarray:
        """Run the prompt; return (V,) logits of its last position."""
        raise NotImplementedError

    def _step(self, token: int) -> np.ndarray:
        """Append one token; return its (V,) next-token logits."""
        raise NotImplementedError

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

    def stream(
        self,
        messages,
        config: GenerationConfig = GenerationConfig(),
        *,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        if self.tokenizer.chat_template == FEW_SHOT_TEMPLATE:
            # a base model continues the transcript: its reply ends where the next turn starts
            config = replace(config, stop=(*config.stop, *FEW_SHOT_STOP))
        return self.stream_ids(self.encode_chat(messages), config, cancel=cancel)

    def generate(
        self,
        messages,
        config: GenerationConfig = GenerationConfig(),
        *,
        cancel: threading.Event | None = None,
    ) -> str:
        return "".join(self.stream(messages, config, cancel=cancel))

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
        self, ids: list[int], config: GenerationConfig, *, cancel: threading.Event | None = None
    ) -> Iterator[str]:
        run = _Run()
        text, pending, out = TextStream(self.tokenizer), "", 0
        for token in self.decode(ids, config, cancel=cancel, run=run):
            out += 1
            pending += text.push(token)
            if config.stop:
                cut = min((pending.find(s) for s in config.stop if s in pending), default=-1)
                if cut >= 0:
                    pending, run.stopped = pending[:cut], "stop"
                    break
                keep = _held_back(pending, config.stop)
                if len(pending) > keep:
                    yield pending[: len(pending) - keep]
                    pending = pending[len(pending) - keep :]
            elif pending:
                yield pending
                pending = ""
        if pending:
            yield pending
        self.last_stats = Stats(len(ids), out, run.ttft, time.perf_counter() - run.t0, run.stopped)

    def decode(
        self,
        ids: Sequence[int],
        config: GenerationConfig,
        *,
        cancel: threading.Event | None = None,
        run: _Run | None = None,
    ) -> Iterator[int]:
        """The token ids chosen after `ids`, one at a time: the prompt is prefilled, then each
        token is sampled and fed back (`_step`) only when the caller asks for the next one, so
        a caller that stops iterating (a stop string) runs no extra step. An end-of-turn token
        ends it unyielded (unless config.ignore_eos); `run` records timing and why it ended."""
        if len(ids) >= self.context_length:
            raise ConfigError(
                f"the prompt has {len(ids)} tokens but the model's context is "
                f"{self.context_length}; shorten it (chat sessions trim old turns for you)"
            )
        run = run if run is not None else _Run()
        max_new = min(config.max_new_tokens, self.context_length - len(ids))
        sampler = Sampler(
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            repetition_penalty=config.repetition_penalty,
            seed=config.seed,
        )
        run.t0 = time.perf_counter()
        logits = self._prefill(list(ids))
        history = list(ids)
        for i in range(max_new):
            token = sampler(logits, history)
            if i == 0:
                run.ttft = time.perf_counter() - run.t0
            if token in self.eos_ids and not config.ignore_eos:
                run.stopped = "eos"
                return
            history.append(token)
            yield token
            if cancel is not None and cancel.is_set():
                run.stopped = "cancel"
                return
            if i + 1 < max_new:
                logits = self._step(token)

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
        return list(self.decode(ids, config))

    def greedy_batch(self, rows: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
        """`greedy` of several prompts (torch overrides it with one left-padded batch)."""
        return [self.greedy(ids, max_new_tokens) for ids in rows]


@dataclass
class _Run:
    """What one `decode` did, for Stats."""

    t0: float = 0.0
    ttft: float = 0.0  # seconds from prefill start to the first token chosen
    stopped: str = "length"
