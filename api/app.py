"""The OpenAI-compatible routes over the runtime's scheduler:

    POST /v1/chat/completions   a chat reply (stream: true gives server-sent events)
    POST /v1/completions        plain text continuation (no chat template)
    GET  /v1/models             every passed artifact/format, and each artifact alone (auto)
    GET  /health                liveness, loaded models, waiting requests (no key needed)

Why aiohttp: aiogram already brings it into the environment (no new dependency), and it
is the bot's model too: one asyncio loop for the I/O, the model in the scheduler's worker
thread, so neither ever blocks the other.

A request names its chat with `user` or the `X-Balabol-Chat` header: the chat's KV state
is kept between its turns (runtime/scheduler.py). A full wait queue answers 429 with
Retry-After; a client that goes away mid-reply cancels its job and frees its slot.

Example: `curl -N localhost:8000/v1/chat/completions -H 'Content-Type: application/json'
-d '{"messages": [{"role": "user", "content": "Hi"}], "stream": true}'`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
from collections.abc import AsyncIterator

from aiohttp import web

from api import protocol
from api.models import Models
from api.protocol import ApiError, Limits, Request
from balabol.errors import BalabolError, ConfigError
from balabol.prompt import encode_text
from runtime.scheduler import Job, QueueFull

log = logging.getLogger(__name__)
RETRY_AFTER = 2  # seconds a client told 429 waits: about one short reply on 2 cores
CHAT_HEADER = "X-Balabol-Chat"
MODELS = web.AppKey("models", Models)
LIMITS = web.AppKey("limits", Limits)
API_KEY = web.AppKey("api_key", str)


def create_app(models: Models, *, api_key: str | None = None, limits: Limits | None = None):
    limits = limits or Limits()
    app = web.Application(middlewares=[_errors, _auth], client_max_size=limits.max_body_bytes)
    app[MODELS], app[LIMITS], app[API_KEY] = models, limits, api_key or ""
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/health", health)
    app.on_cleanup.append(_close)
    return app


async def start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve app on host:port (0: a free port); returns the runner and the bound port.
    handler_cancellation: a client that disconnects cancels its handler at once, even while
    it waits for the model, so its job is cancelled then and not at the next token."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, runner.addresses[0][1]


async def _close(app: web.Application) -> None:
    await asyncio.to_thread(app[MODELS].close)


# --- middlewares -----------------------------------------------------------------------------


@web.middleware
async def _errors(request: web.Request, handler):
    """Every error in OpenAI's shape, so clients show its message, not a parse failure."""
    try:
        return await handler(request)
    except ApiError as e:
        return web.json_response(e.body(), status=e.status, headers=e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {413: "request_too_large", 404: "not_found", 405: "method_not_allowed"}
        err = ApiError(
            e.status, f"{request.method} {request.path}: {e.reason}", code=code.get(e.status)
        )
        if e.status == 413:
            err.message = (
                f"the body is larger than this server takes "
                f"({request.app[LIMITS].max_body_bytes} bytes)"
            )
        return web.json_response(err.body(), status=e.status)
    except ConfigError as e:
        return web.json_response(ApiError(400, str(e)).body(), status=400)
    except BalabolError as e:  # a model that cannot be loaded, a backend that failed
        log.error("%s %s: %s", request.method, request.path, e)
        return web.json_response(ApiError(500, str(e)).body(), status=500)
    except (asyncio.CancelledError, ConnectionResetError):
        raise  # the client went away: nobody to answer
    except Exception as e:
        log.exception("%s %s failed", request.method, request.path)
        body = ApiError(500, f"internal error: {type(e).__name__}: {e}").body()
        return web.json_response(body, status=500)


@web.middleware
async def _auth(request: web.Request, handler):
    key = request.app[API_KEY]
    if key and request.path.startswith("/v1/"):
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise ApiError(
                401,
                "invalid API key: send the server's BALABOL_API_KEY as `Authorization: Bearer KEY`",
                code="invalid_api_key",
            )
    return await handler(request)


# --- routes ----------------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    loaded = request.app[MODELS].loaded()
    return web.json_response(
        {
            "status": "ok",
            "loaded": [m.id for m in loaded],
            "waiting": sum(m.scheduler.waiting for m in loaded),
        }
    )


async def list_models(request: web.Request) -> web.Response:
    data = [
        {"id": i, "object": "model", "created": t, "owned_by": "balabol"}
        for i, t in request.app[MODELS].ids()
    ]
    return web.json_response({"object": "list", "data": data})


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = protocol.parse_json(await request.read())
    req = protocol.chat_request(body, request.app[LIMITS])
    key = request.headers.get(CHAT_HEADER) or req.user
    return await _reply(request, req, key)


async def completions(request: web.Request) -> web.StreamResponse:
    body = protocol.parse_json(await request.read())
    return await _reply(request, protocol.completion_request(body, request.app[LIMITS]), None)


async def _reply(request: web.Request, req: Request, key: str | None) -> web.StreamResponse:
    # 1. the model (loaded on first use) and a prompt that fits its context
    loaded = await request.app[MODELS].get(req.model)
    await asyncio.to_thread(_check_context, loaded.backend, req.prompt)
    # 2. a place in its queue, or 429
    try:
        job = loaded.scheduler.submit(req.prompt, req.config, key=key)
    except QueueFull as e:
        raise ApiError(
            429,
            f"the server is busy ({e}); retry in {RETRY_AFTER} s",
            code="queue_full",
            headers={"Retry-After": str(RETRY_AFTER)},
        ) from e
    # 3. the reply, whole or as events; whatever ends this (the end of the reply, an error, a
    # client gone: a failed write or this handler cancelled) cancels the job, which frees its
    # slot (a no-op once the reply is done)
    try:
        if req.stream:
            return await _stream(request, req, loaded.id, job)
        text = "".join([piece async for piece in _pieces(job)])
        return web.json_response(protocol.answer(req, loaded.id, text, job.stats))
    finally:
        job.cancel()


async def _stream(request: web.Request, req: Request, model: str, job: Job):
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    if not isinstance(req.prompt, str):  # OpenAI's first chunk names the role
        await resp.write(protocol.event(protocol.chunk(req, model, role=True)))
    try:
        async for piece in _pieces(job):
            await resp.write(protocol.event(protocol.chunk(req, model, text=piece)))
    except BalabolError as e:  # the headers are sent: the error goes in the stream
        await resp.write(protocol.event(ApiError(400, str(e)).body()))
    else:
        finish = protocol.finish_reason(job.stats)
        await resp.write(protocol.event(protocol.chunk(req, model, finish=finish)))
        if req.include_usage:
            await resp.write(protocol.event(protocol.chunk(req, model, stats=job.stats)))
    await resp.write(protocol.event("[DONE]"))
    await resp.write_eof()
    return resp


def _check_context(backend, prompt) -> None:
    """A prompt longer than the model's context is the client's error (400), told before
    the reply starts, so a streamed request gets it as a status too."""
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None:
        return
    if isinstance(prompt, str):
        n = len(encode_text(tokenizer, prompt))
    else:
        n = len(backend.encode_chat(prompt))
    if n >= backend.context_length:
        raise ApiError(
            400,
            f"the prompt has {n} tokens but the model's context is "
            f"{backend.context_length}; shorten it",
            param="messages",
            code="context_length_exceeded",
        )


async def _pieces(job: Job) -> AsyncIterator[str]:
    """The job's pieces on the event loop: a thread reads the scheduler's blocking queue."""
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()

    def post(item):
        # the loop may be gone (server stopped): then nobody reads this
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(inbox.put_nowait, item)

    def read():
        try:
            for piece in job:
                post(piece)
            post(None)
        except BaseException as e:  # raised on the loop, in the handler
            post(e)

    threading.Thread(target=read, name="balabol-api-reply", daemon=True).start()
    while (item := await inbox.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item
