"""One sequence's generation, a token at a time: sampling, text that never splits a
character, stop strings held back until they cannot match, cancellation and timing.

A driver feeds it logits and feeds the model the token it returns: the single-stream loop
(`DecoderBackend.stream_ids`) and the batching scheduler (many `Decoding`s, one model call
per step) share this, so a reply is the same whichever of them produced it.

Example:
    d = Decoding(tokenizer, ids, GenerationConfig.greedy(), eos_ids={2}, context_length=2048)
    token = d.push(model.prefill(ids))
    while token is not None:
        print(d.take(), end="")
        token = d.push(model.step(token))
    print(d.take())
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from balabol.errors import ConfigError
from runtime.sampling import Sampler, Seen


@dataclass(frozen=True)
class Stats:
    prompt_tokens: int
    new_tokens: int
    ttft: float  # seconds from call to first token chosen
    seconds: float  # total
    stopped_by: str  # eos | stop | length | cancel | error
    cached_tokens: int = 0  # prompt tokens whose KV state was reused (not recomputed)

    @property
    def tokens_per_second(self) -> float:
        decode = self.seconds - self.ttft
        return (self.new_tokens - 1) / decode if self.new_tokens > 1 and decode > 0 else 0.0


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


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of text could be the start of a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                best = max(best, n)
                break
    return best


def check_prompt(n_prompt: int, context_length: int) -> None:
    if n_prompt >= context_length:
        raise ConfigError(
            f"the prompt has {n_prompt} tokens but the model's context is "
            f"{context_length}; shorten it (chat sessions trim old turns for you)"
        )


class Decoding:
    """The state of one reply. `push(logits)` picks the next token and returns it (the
    token the model must read next) or None once the reply has ended; `take()` returns the
    text that became final since the last call."""

    def __init__(
        self,
        tokenizer,
        prompt_ids: Sequence[int],
        config,
        *,
        eos_ids: Collection[int],
        context_length: int,
        clock: Callable[[], float] = time.perf_counter,
    ):
        check_prompt(len(prompt_ids), context_length)
        self.config = config
        self.eos_ids = eos_ids
        self.max_new = min(config.max_new_tokens, context_length - len(prompt_ids))
        self.sampler = Sampler(
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            repetition_penalty=config.repetition_penalty,
            seed=config.seed,
        )
        self.prompt_tokens = len(prompt_ids)
        self.seen = Seen(prompt_ids)  # what the repetition penalty looks at
        self.out: list[int] = []  # the reply's tokens (no eos)
        self.cached_tokens = 0  # set by the driver: prompt tokens it did not recompute
        self.stopped: str | None = None
        self._text = TextStream(tokenizer)
        self._pending = ""  # decoded, but may still turn out to be a stop string
        self._ready: list[str] = []  # final text not yet taken
        self._clock = clock
        self._t0 = clock()
        self._ttft = 0.0
        self._seconds = 0.0

    @property
    def done(self) -> bool:
        return self.stopped is not None

    def push(self, logits) -> int | None:
        if self.done:
            return None
        token = self.sampler(logits, self.seen)
        if not self.out:
            self._ttft = self._clock() - self._t0
        if token in self.eos_ids and not self.config.ignore_eos:
            return self._finish("eos")
        self.out.append(token)
        self.seen.add(token)
        self._pending += self._text.push(token)
        stops = self.config.stop
        if stops:
            cut = min((self._pending.find(s) for s in stops if s in self._pending), default=-1)
            if cut >= 0:
                self._pending = self._pending[:cut]
                return self._finish("stop")
            keep = held_back(self._pending, stops)
            if len(self._pending) > keep:
                self._ready.append(self._pending[: len(self._pending) - keep])
                self._pending = self._pending[len(self._pending) - keep :]
        elif self._pending:
            self._ready.append(self._pending)
            self._pending = ""
        if len(self.out) >= self.max_new:
            return self._finish("length")
        return token

    def cancel(self, reason: str = "cancel") -> None:
        if not self.done:
            self._finish(reason)

    def take(self) -> str:
        text = "".join(self._ready)
        self._ready.clear()
        return text

    @property
    def stats(self) -> Stats:
        seconds = self._seconds if self.done else self._clock() - self._t0
        return Stats(
            self.prompt_tokens,
            len(self.out),
            self._ttft,
            seconds,
            self.stopped or "running",
            self.cached_tokens,
        )

    def _finish(self, reason: str) -> None:
        self.stopped = reason
        if self._pending:
            self._ready.append(self._pending)
            self._pending = ""
        self._seconds = self._clock() - self._t0
        return None
