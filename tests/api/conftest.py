"""`balabol serve` in-process on 127.0.0.1 (a free port), over the tiny llama export, and a
backend wrapper that holds replies at gates the test opens (no sleeps)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from api.app import create_app, start
from api.models import Models
from runtime.loader import load as runtime_load

KEY = "test-key"


class Server:
    def __init__(self, app):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner, port = asyncio.run_coroutine_threadsafe(
            start(app, "127.0.0.1", 0), self.loop
        ).result()
        self.url = f"http://127.0.0.1:{port}/v1"

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class Held:
    """A real backend whose replies wait at `gate` before starting; with `until_cancelled`,
    each reply stops after its first piece until its job is cancelled."""

    def __init__(self, backend):
        self.backend = backend
        self.entered = threading.Event()  # a reply started (the worker is busy)
        self.gate = threading.Event()
        self.until_cancelled = False
        self.ended = threading.Event()
        self.cancelled: list[bool] = []  # per reply: was it cancelled

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def stream(self, messages, config, *, cancel=None, key=None):
        self.entered.set()
        self.gate.wait()
        try:
            for i, piece in enumerate(self.backend.stream(messages, config, cancel=cancel)):
                yield piece
                if i == 0 and self.until_cancelled:
                    cancel.wait()
        finally:
            self.cancelled.append(cancel.is_set())
            self.ended.set()


@pytest.fixture
def serve(exported_llama):
    """serve(**options) -> a running Server; all are stopped after the test."""
    root, _ = exported_llama
    servers: list[Server] = []

    def make(*, api_key=KEY, load=runtime_load, queue_size=16, limits=None, default="llama/onnx"):
        models = Models(root, default=default, queue_size=queue_size, load=load)
        server = Server(create_app(models, api_key=api_key, limits=limits))
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def client_for():
    from openai import OpenAI

    clients = []

    def make(server, key=KEY):
        c = OpenAI(base_url=server.url, api_key=key, max_retries=0)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
