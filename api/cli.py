"""`balabol serve`: the OpenAI-compatible HTTP server (api/app.py) over every exported model.

It binds 127.0.0.1 by default. Any other address serves the network, so it needs an API key:
set BALABOL_API_KEY (an environment variable, so the key stays out of `ps` and shell
history); clients send it as `Authorization: Bearer KEY`.

Example: `BALABOL_API_KEY=secret balabol serve --host 0.0.0.0 --port 8000 --model me/gguf`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from cyclopts import Parameter

from balabol.errors import ConfigError

API_KEY_ENV = "BALABOL_API_KEY"
OutDir = Annotated[Path | None, Parameter(help="artifacts directory (default: ./artifacts)")]


@dataclass(frozen=True)
class ServeConfig:
    # The docstrings are the help of `balabol serve`'s flags.
    host: str = "127.0.0.1"
    """address to listen on; any but a loopback address needs BALABOL_API_KEY set"""
    port: int = 8000
    """port to listen on (0: any free port)"""
    model: str | None = None
    """the model of requests that name none: ARTIFACT or ARTIFACT/FORMAT (default: the embedded default artifact, else the first)"""
    queue_size: int = 16
    """requests waiting per model before the server answers 429"""
    parallel: str | None = None
    """chats decoded together per gguf model: a number or auto (default: $BALABOL_PARALLEL)"""
    max_body_bytes: int = 1 << 20
    """largest request body (413 above it)"""
    max_messages: int = 256
    """most messages in one chat request (400 above it)"""
    max_characters: int = 100_000
    """most characters of all messages (or the prompt) of one request (400 above it)"""

    def __post_init__(self):
        checks = [
            ("port", 0 <= self.port <= 65535, "a port number from 0 to 65535"),
            ("queue_size", self.queue_size >= 1, "at least 1"),
            ("max_body_bytes", self.max_body_bytes >= 1024, "at least 1024"),
            ("max_messages", self.max_messages >= 1, "at least 1"),
            ("max_characters", self.max_characters >= 1, "at least 1"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ConfigError(
                    f"--{name.replace('_', '-')} {getattr(self, name)!r} is invalid: must be {allowed}"
                )
        if not self.host:
            raise ConfigError("--host is empty: give an address such as 127.0.0.1")


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None) -> None:
    """Refuse to serve the network without a key: anyone who reaches the port would spend
    this machine's CPU."""
    if not api_key and not loopback(host):
        raise ConfigError(
            f"--host {host} serves the network, so an API key is required: set "
            f"{API_KEY_ENV}=<a long random string> (clients send it as "
            "`Authorization: Bearer KEY`), or bind --host 127.0.0.1"
        )


def serve(
    *,
    config: Annotated[ServeConfig, Parameter(name="*")] = ServeConfig(),
    out_dir: OutDir = None,
) -> int:
    """Serve the exported models over an OpenAI-compatible HTTP API (/v1/chat/completions)."""
    from api.app import create_app, start
    from api.models import Models
    from api.protocol import Limits
    from balabol.settings import artifacts_dir
    from runtime.loader import parallel

    api_key = os.environ.get(API_KEY_ENV) or None
    check_exposure(config.host, api_key)
    models = Models(
        Path(out_dir or artifacts_dir()),
        default=config.model,
        queue_size=config.queue_size,
        parallel=parallel(config.parallel),
    )
    limits = Limits(config.max_body_bytes, config.max_messages, config.max_characters)
    app = create_app(models, api_key=api_key, limits=limits)

    async def run() -> None:
        runner, port = await start(app, config.host, config.port)
        host = f"[{config.host}]" if ":" in config.host else config.host
        print(
            f"serving {len(models.ids())} models on http://{host}:{port}/v1 "
            f"(default: {models.default}; API key: {'required' if api_key else 'none'})",
            file=sys.stderr,
        )
        try:
            await asyncio.Event().wait()  # until Ctrl-C
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    return 0
