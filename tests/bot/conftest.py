"""The bot against the fake Telegram server with the tiny exported llama.

`async def` tests run in a fresh event loop each (no plugin needed: see the hook below).
`bot_running(...)` starts the real aiogram bot polling a FakeTelegram and stops it after.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from dataclasses import dataclass

import pytest

from bot.app import App
from bot.config import load_settings
from tests.fakes.telegram import FakeTelegram

TEST_TIMEOUT = 60  # seconds; a hung test fails instead of hanging the suite
FORMATS = ["gguf-q4_k_m", "onnx"]  # fast to load; torch is not needed to serve


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(asyncio.wait_for(pyfuncitem.obj(**args), TEST_TIMEOUT))
        return True
    return None


@pytest.fixture(scope="session")
def artifacts(exported_llama):
    return exported_llama[0]


def settings_for(tg: FakeTelegram, artifacts, db, **overrides):
    values = dict(
        bot_token=tg.token,
        api_base=tg.url,
        artifacts=artifacts,
        db=db,
        artifact="llama",
        format="gguf-q4_k_m",
        formats=FORMATS,
        max_new_tokens=8,
        max_reply_tokens=16,
        temperature=0,
        edit_interval=0.05,
        chat_interval=0.05,  # the send gate's pacing, as fast as the edits
        group_interval=0.05,
        shutdown_grace=5,
        threads=1,
    )
    values.update(overrides)
    return load_settings(None, **values)


@dataclass
class Generation:
    format: str
    messages: list
    config: object


class ManualClock:
    """A `bot.streaming.Clock` in virtual time: it moves only when something sleeps on it
    (or `advance`s it), so pacing and flood control are exact and instant. Sleepers wake in
    the order of their wake times; `sleeps` records every wait."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []
        self._wakes: list[float] = []  # of the sleepers not yet woken

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        wake = self.now + max(seconds, 0.0)
        self._wakes.append(wake)
        await asyncio.sleep(0)  # let the other ready tasks run (and maybe sleep) first
        while wake > min(self._wakes):  # an earlier sleeper wakes first
            await asyncio.sleep(0)
        self._wakes.remove(wake)
        self.now = max(self.now, wake)

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Backend:
    """A cached real backend seen through a Loader: records, and optionally slows or holds,
    replies."""

    # the scheduler then serves one reply at a time through `stream` below, where replies are
    # recorded and slowed; batched decoding has its own tests (tests/runtime/test_multichat.py)
    engine = None

    def __init__(self, backend, loader: Loader):
        self._backend, self._loader = backend, loader

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def stream(self, messages, config, *, cancel=None, key=None):
        loader = self._loader
        loader.generations.append(Generation(self._backend.format, messages, config))
        if loader.gate is not None:
            loader.gate.wait(10)
        pieces = self._backend.stream(messages, config, cancel=cancel, key=key)
        said = ""
        for i, piece in enumerate(pieces):
            if i == loader.fail_after:
                raise RuntimeError("the model broke down")
            if loader.hold is not None and said.strip() and not loader.held.is_set():
                loader.held.set()  # some text is out: hold the rest
                while not loader.hold.wait(0.01) and not (cancel and cancel.is_set()):
                    pass
            time.sleep(loader.delay)
            said += piece
            yield piece

    def close(self):  # the session's cache owns the real backend
        pass


class Loader:
    """`runtime.loader.load` for tests: backends are loaded once per session and shared;
    each Loader records what was generated and can slow pieces down (`delay` seconds
    apart), hold every generation until `gate` is set, hold the first generation once some
    text is out until `hold` is set or the job is cancelled (`held` tells the test it is
    held), or fail after `fail_after` pieces."""

    def __init__(
        self,
        cache: dict,
        *,
        delay: float = 0.0,
        gate: threading.Event | None = None,
        hold: threading.Event | None = None,
        fail_after: int | None = None,
    ):
        self.cache, self.delay, self.gate, self.fail_after = cache, delay, gate, fail_after
        self.hold, self.held = hold, threading.Event()
        self.generations: list[Generation] = []
        self.loads: list[str] = []

    def __call__(self, artifact, fmt, *, root, n_threads=None, parallel=1):
        from runtime.loader import load

        key = (str(root), artifact, fmt)
        if key not in self.cache:
            self.cache[key] = load(artifact, fmt, root=root, n_threads=n_threads, parallel=parallel)
        self.loads.append(fmt)
        return Backend(self.cache[key], self)


@pytest.fixture(scope="session")
def backend_cache():
    cache: dict = {}
    yield cache
    for backend in cache.values():
        backend.close()


@pytest.fixture
def loader(backend_cache):
    return Loader(backend_cache)


@pytest.fixture
def make_loader(backend_cache):
    return lambda **kw: Loader(backend_cache, **kw)


@contextlib.asynccontextmanager
async def bot_running(
    artifacts,
    db,
    *,
    load: Loader,
    tg: FakeTelegram | None = None,
    clock: ManualClock | None = None,
    **overrides,
):
    """(fake telegram, app) with the bot polling; stops the bot (gracefully) afterwards."""
    own = tg is None
    if own:
        tg = await FakeTelegram().start()
    app = App(settings_for(tg, artifacts, db, **overrides), load=load, clock=clock)
    app.task = asyncio.create_task(app.run(handle_signals=False))
    polls = tg.polls
    try:
        await tg.wait_for(lambda: tg.polls > polls, also=app.task)
        yield tg, app
    finally:
        if not app.task.done():
            await app.stop()
        await app.task
        if own:
            await tg.close()


async def settled(tg: FakeTelegram, app: App, timeout: float = 30) -> None:
    """Wait until every injected update was fetched and fully handled."""
    # aiogram keeps the tasks of updates being handled here (polling, handle_as_tasks)
    await tg.wait_for(
        lambda: not tg.updates and not app.dp._handle_update_tasks and not app.replies.active,
        timeout,
        also=app.task,
    )
