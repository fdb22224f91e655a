"""OpenAI's wire format: request bodies read into a GenerationConfig and messages, answers
and errors written as OpenAI's JSON, so any OpenAI client (the `openai` package, curl
scripts, chat UIs) talks to `balabol serve` unchanged.

Beyond OpenAI's fields a request may set `top_k` and `repetition_penalty` (vLLM's name; the
llama.cpp servers' `repeat_penalty` is read too); a field left out takes `balabol chat`'s default
(runtime.base.GenerationConfig), so `temperature: 0` alone still applies the default
repetition penalty of 1.1.

Example: `curl localhost:8000/v1/chat/completions -d '{"messages": [{"role": "user",
"content": "Hi"}]}'`.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from balabol.errors import ConfigError
from runtime.base import GenerationConfig

ROLES = ("system", "user", "assistant")
# runtime stop reason -> OpenAI finish_reason (a cancelled reply has none: nobody reads it)
FINISH = {"eos": "stop", "stop": "stop", "length": "length"}


class ApiError(Exception):
    """An answer in OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""

    TYPES: ClassVar[dict[int, str]] = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        404: "not_found_error",
        413: "invalid_request_error",
        429: "rate_limit_error",
        503: "server_error",
    }

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        kind = self.TYPES.get(
            self.status, "server_error" if self.status >= 500 else "invalid_request_error"
        )
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }


@dataclass(frozen=True)
class Limits:
    """What one request may carry (the body's bytes are checked before it is parsed)."""

    max_body_bytes: int = 1 << 20
    max_messages: int = 256
    max_characters: int = 100_000  # all message contents (or the prompt) together


@dataclass(frozen=True)
class Request:
    """One parsed request: what to generate from and how."""

    model: str | None
    prompt: list[dict[str, str]] | str  # chat messages, or plain text (/v1/completions)
    config: GenerationConfig
    stream: bool = False
    include_usage: bool = False
    user: str | None = None
    id: str = field(default_factory=lambda: secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))


def _bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(f"the body is not valid JSON ({e}); send a JSON object") from e
    if not isinstance(body, dict):
        raise _bad(f"the body must be a JSON object, not {type(body).__name__}")
    return body


def _number(body, name, kind=(int, float)):
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, kind):
        want = "an integer" if kind is int else "a number"
        raise _bad(f"{name} must be {want}, not {json.dumps(v)}", name)
    return v


def _first(*values):
    return next((v for v in values if v is not None), None)


def _config(body: dict[str, Any]) -> GenerationConfig:
    """A GenerationConfig from OpenAI's sampling fields; its own checks give the ranges."""
    if _number(body, "n", int) not in (None, 1):
        raise _bad("n must be 1: one choice per request", "n")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (
        isinstance(stop, list) and all(isinstance(s, str) and s for s in stop) and len(stop) <= 16
    ):
        raise _bad("stop must be a non-empty string or a list of up to 16 of them", "stop")
    max_tokens = _number(body, "max_completion_tokens", int)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", int)
    given = {
        "max_new_tokens": max_tokens,
        "temperature": _number(body, "temperature"),
        "top_p": _number(body, "top_p"),
        "top_k": _number(body, "top_k", int),
        "repetition_penalty": _first(
            _number(body, "repetition_penalty"), _number(body, "repeat_penalty")
        ),
        "seed": _number(body, "seed", int),
        "stop": tuple(stop) if stop else None,
    }
    try:
        return GenerationConfig(**{k: v for k, v in given.items() if v is not None})
    except ConfigError as e:
        # the config names its CLI flag (--top-p); the API's name for it is the JSON field
        flag = str(e).split()[0].removeprefix("--").replace("-", "_")
        param = {"max_new_tokens": "max_tokens"}.get(flag, flag)
        raise _bad(str(e).replace(str(e).split()[0], param, 1), param) from e


def _content(m: Any, i: int) -> str:
    content = m.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        if all(isinstance(p, str) for p in parts) and all(p.get("type") == "text" for p in content):
            return "".join(parts)
        raise _bad("only text content parts are supported", f"messages[{i}].content")
    if content is None and m.get("role") == "assistant":
        return ""
    raise _bad(f"messages[{i}].content must be a string", f"messages[{i}].content")


def _common(body: dict[str, Any]) -> dict[str, Any]:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model must be a string such as 'artifact/format'", "model")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad("user must be a string", "user")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream must be true or false", "stream")
    options = body.get("stream_options") or {}
    return {
        "model": model or None,
        "config": _config(body),
        "stream": stream,
        "include_usage": bool(isinstance(options, dict) and options.get("include_usage")),
        "user": user or None,
    }


def chat_request(body: dict[str, Any], limits: Limits) -> Request:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list of {role, content}", "messages")
    if len(messages) > limits.max_messages:
        raise _bad(
            f"{len(messages)} messages is more than this server takes "
            f"({limits.max_messages}); send fewer",
            "messages",
        )
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise _bad(
                f"messages[{i}] needs a role: one of {', '.join(ROLES)}", f"messages[{i}].role"
            )
        out.append({"role": m["role"], "content": _content(m, i)})
    _check_size(sum(len(m["content"]) for m in out), limits, "messages")
    return Request(prompt=out, **_common(body))


def completion_request(body: dict[str, Any], limits: Limits) -> Request:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _bad("prompt must be a string (one prompt per request)", "prompt")
    _check_size(len(prompt), limits, "prompt")
    return Request(prompt=prompt, **_common(body))


def _check_size(n: int, limits: Limits, param: str) -> None:
    if n > limits.max_characters:
        raise _bad(
            f"the {param} have {n} characters; this server takes at most {limits.max_characters}",
            param,
            "context_length_exceeded",
        )


# --- answers ---------------------------------------------------------------------------------


def usage(stats) -> dict[str, int]:
    p, n = (stats.prompt_tokens, stats.new_tokens) if stats else (0, 0)
    return {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}


def finish_reason(stats) -> str | None:
    return FINISH.get(stats.stopped_by) if stats else None


def _head(req: Request, model: str, obj: str) -> dict[str, Any]:
    prefix = "chatcmpl" if obj.startswith("chat") else "cmpl"
    return {"id": f"{prefix}-{req.id}", "object": obj, "created": req.created, "model": model}


def answer(req: Request, model: str, text: str, stats) -> dict[str, Any]:
    """The whole reply (stream: false)."""
    if isinstance(req.prompt, str):
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason(stats)}
        obj = "text_completion"
    else:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": finish_reason(stats),
        }
        obj = "chat.completion"
    return {**_head(req, model, obj), "choices": [choice], "usage": usage(stats)}


def chunk(
    req: Request,
    model: str,
    *,
    text: str | None = None,
    role: bool = False,
    finish: str | None = None,
    stats=None,
) -> dict[str, Any]:
    """One server-sent event of a streamed reply (stats: the closing usage chunk)."""
    if isinstance(req.prompt, str):
        obj = "text_completion"
        choices = [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}]
    else:
        obj = "chat.completion.chunk"
        delta = (
            {"role": "assistant", "content": ""}
            if role
            else ({"content": text} if text is not None else {})
        )
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    out = {**_head(req, model, obj), "choices": [] if stats is not None else choices}
    if stats is not None:
        out["usage"] = usage(stats)
    return out


def event(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()
