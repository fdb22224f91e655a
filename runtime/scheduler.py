"""One loaded model, many callers: continuous batching over a bounded wait queue.

A worker thread owns the model. With a backend that can hold several sequences (the gguf
backend's `engine`), every step is one model call carrying the next token of each running
reply plus a chunk of at most one new prompt, so a long prompt never stalls the others and
new requests join between steps. Up to `parallel` replies run at once; the rest wait in
line and can see their position. Other backends serve one reply at a time, except a
backend that only forwards requests (`concurrent`, the remote backend): `parallel` worker
threads then keep that many requests open at the server, which batches them itself.

Each request names its chat (`key`): its KV state is kept between turns, so the next turn
reads only its new message (runtime/gguf_engine.py).

Example (the bot does this): `job = scheduler.submit(messages, config, key=chat_id)`,
then `for piece in job: ...`. A `str` instead of messages is a plain continuation
(`backend.complete`: no chat template; `balabol serve`'s /v1/completions).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

from balabol.errors import BalabolError
from runtime.base import GenerationConfig
from runtime.decoding import Decoding

_DONE = object()
PREFILL_CHUNK = 128  # prompt tokens per step while other replies are decoding


class QueueFull(BalabolError):
    """The wait queue is full; the caller should tell the user to retry."""


class Job:
    def __init__(self, messages, config: GenerationConfig, key: Hashable | None = None):
        self.messages, self.config, self.key = messages, config, key
        self.cancel_event = threading.Event()
        self.pieces: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.stats = None
        self.started = threading.Event()  # set when the job leaves the wait queue
        self._scheduler: Scheduler | None = None

    @property
    def position(self) -> int:
        """0 when running (or done), n when n jobs are ahead of this one."""
        return self._scheduler.position(self) if self._scheduler else 0

    def cancel(self) -> None:
        self.cancel_event.set()

    def __iter__(self) -> Iterator[str]:
        while (piece := self.pieces.get()) is not _DONE:
            yield piece
        if self.error is not None:
            raise self.error


@dataclass
class _Running:
    """A reply in the batch: its slot in the engine and what the model reads next."""

    job: Job
    decoding: Decoding
    slot: object
    prompt: list[int]  # the whole prompt
    token: int | None = None  # the sampled token to feed next (decode phase)

    @property
    def prefilling(self) -> bool:
        return len(self.slot.ids) < len(self.prompt)


class Scheduler:
    def __init__(self, backend, *, max_queue: int = 16, parallel: int | None = None):
        self.backend = backend
        self.max_queue = max_queue
        self.engine = getattr(backend, "engine", None)
        concurrent = getattr(backend, "concurrent", False)
        if self.engine is not None:
            slots = len(self.engine.slots)
        else:
            slots = max(parallel or 1, 1) if concurrent else 1
        self.parallel = min(parallel or slots, slots)
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        run = self._run_batched if self.engine is not None else self._run_single
        workers = self.parallel if concurrent else 1
        self._workers = [
            threading.Thread(target=run, name="balabol-generate", daemon=True)
            for _ in range(workers)
        ]
        for w in self._workers:
            w.start()

    def submit(
        self,
        messages,
        config: GenerationConfig = GenerationConfig(),
        *,
        key: Hashable | None = None,
    ) -> Job:
        job = Job(messages, config, key)
        with self._cond:
            if self._closed:
                raise QueueFull("the model is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting")
            job._scheduler = self
            self._waiting.append(job)
            self._cond.notify()
        return job

    def position(self, job: Job) -> int:
        with self._cond:
            try:
                return self._waiting.index(job) + 1
            except ValueError:
                return 0

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def _next(self, block: bool) -> Job | None:
        """The next waiting job (None when closed and empty, or when not blocking and empty)."""
        with self._cond:
            while block and not self._waiting and not self._closed:
                self._cond.wait()
            if not self._waiting:
                return None
            job = self._waiting.popleft()
        job.started.set()
        return job

    # --- one reply at a time -------------------------------------------------------------
    def _run_single(self) -> None:
        while (job := self._next(block=True)) is not None:
            try:
                if not job.cancel_event.is_set():
                    if isinstance(job.messages, str):  # plain text: no chat template
                        pieces = self.backend.complete(
                            job.messages, job.config, cancel=job.cancel_event
                        )
                    else:
                        pieces = self.backend.stream(
                            job.messages, job.config, cancel=job.cancel_event, key=job.key
                        )
                    for piece in pieces:
                        job.pieces.put(piece)
                    job.stats = getattr(self.backend, "last_stats", None)
            except BaseException as e:  # handed to the caller, who re-raises it
                job.error = e
            finally:
                job.pieces.put(_DONE)

    # --- continuous batching -------------------------------------------------------------
    def _run_batched(self) -> None:
        running: list[_Running] = []
        while True:
            # 1. admit waiting jobs while there is room (block only when idle)
            while len(running) < self.parallel:
                job = self._next(block=not running)
                if job is None:
                    break
                if (r := self._start(job)) is not None:
                    running.append(r)
            if not running:
                return  # closed and drained
            # 2. one model call: every decoding reply's next token + one prompt chunk
            work = [r for r in running if not r.prefilling]
            entries = [(r.slot, [r.token], True) for r in work]
            filling = next((r for r in running if r.prefilling), None)
            if filling is not None:
                budget = PREFILL_CHUNK if work else self.engine.n_batch
                start = len(filling.slot.ids)
                chunk = filling.prompt[start : start + budget]
                work.append(filling)
                entries.append((filling.slot, chunk, start + len(chunk) == len(filling.prompt)))
            for r, logits in self._decode(work, entries):
                # 3. each reply picks its token, streams its text, or ends
                if isinstance(logits, BaseException):
                    self._finish(r, running, error=logits)
                    continue
                if logits is None:  # a prompt chunk that was not the last
                    if r.job.cancel_event.is_set():
                        r.decoding.cancel()
                        self._finish(r, running)
                    continue
                r.token = r.decoding.push(logits)
                if piece := r.decoding.take():
                    r.job.pieces.put(piece)
                if r.job.cancel_event.is_set():
                    r.decoding.cancel()
                if r.decoding.done:
                    self._finish(r, running)

    def _start(self, job: Job) -> _Running | None:
        if job.cancel_event.is_set():
            job.pieces.put(_DONE)
            return None
        try:
            ids, config = self.backend.request(job.messages, job.config)
            d = Decoding(
                self.backend.tokenizer,
                ids,
                config,
                eos_ids=self.backend.eos_ids,
                context_length=self.backend.context_length,
            )
            slot = self.engine.claim(job.key, ids)
        except BaseException as e:
            job.error = e
            job.pieces.put(_DONE)
            return None
        d.cached_tokens = slot.reused
        return _Running(job, d, slot, ids)

    def _decode(self, work: list[_Running], entries: list) -> list[tuple[_Running, object]]:
        """Logits for each entry; when the batch fails, each entry alone, so one bad
        sequence fails only its own reply."""
        try:
            return list(zip(work, self.engine.decode(entries), strict=True))
        except Exception as e:
            if len(entries) == 1:
                return [(work[0], e)]
        out = []
        for r, entry in zip(work, entries, strict=True):
            try:
                (logits,) = self.engine.decode([entry])
            except Exception as e:
                logits = e
            out.append((r, logits))
        return out

    def _finish(self, r: _Running, running: list[_Running], error=None) -> None:
        running.remove(r)
        if error is not None:
            r.decoding.cancel("error")
            r.job.error = error
        self.engine.release(r.slot, keep=error is None)
        r.job.stats = r.decoding.stats
        r.job.pieces.put(_DONE)

    def close(self, *, wait: bool = True) -> None:
        """Stop accepting jobs; finish the queued ones when wait, else cancel them."""
        with self._cond:
            self._closed = True
            if not wait:
                for job in self._waiting:
                    job.cancel()
            self._cond.notify_all()
        for w in self._workers:
            w.join()
