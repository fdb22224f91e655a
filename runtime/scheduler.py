"""One loaded model, many callers: a worker thread runs one generation at a time; callers
beyond capacity wait in a bounded queue and can see their position.

Example (the bot does this): `job = scheduler.submit(messages, config); for piece in job: ...`
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterator

from balabol.errors import BalabolError
from runtime.base import GenerationConfig

_DONE = object()


class QueueFull(BalabolError):
    """The wait queue is full; the caller should tell the user to retry."""


class Job:
    def __init__(self, messages, config: GenerationConfig):
        self.messages, self.config = messages, config
        self.cancel_event = threading.Event()
        self.pieces: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.stats = None
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


class Scheduler:
    def __init__(self, backend, *, max_queue: int = 16):
        self.backend = backend
        self.max_queue = max_queue
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="balabol-generate", daemon=True)
        self._worker.start()

    def submit(self, messages, config: GenerationConfig = GenerationConfig()) -> Job:
        job = Job(messages, config)
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

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed and not self._waiting:
                    return
                job = self._waiting.popleft()
            try:
                if not job.cancel_event.is_set():
                    for piece in self.backend.stream(
                        job.messages, job.config, cancel=job.cancel_event
                    ):
                        job.pieces.put(piece)
                    job.stats = getattr(self.backend, "last_stats", None)
            except BaseException as e:  # handed to the caller, who re-raises it
                job.error = e
            finally:
                job.pieces.put(_DONE)

    def close(self, *, wait: bool = True) -> None:
        """Stop accepting jobs; finish the queued ones when wait, else cancel them."""
        with self._cond:
            self._closed = True
            if not wait:
                for job in self._waiting:
                    job.cancel()
            self._cond.notify_all()
        self._worker.join()
