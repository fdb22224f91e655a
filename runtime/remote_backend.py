"""`--format remote`: any OpenAI-compatible server as a backend (llama.cpp's server, vLLM,
Ollama, or `balabol serve` on another machine), so `balabol chat`, `generate`, the bot and
`balabol eval` (its replies) run there.

    BALABOL_REMOTE_URL    the server's base URL, e.g. http://gpu-box:8000/v1 (/v1 is added
                          when missing)
    BALABOL_REMOTE_KEY    its API key, sent as `Authorization: Bearer KEY` (optional)
    BALABOL_REMOTE_MODEL  the model to ask for (optional: the server's default)

Replies stream as server-sent events over the standard library's HTTP client: no `openai`
dependency at runtime, and the same blocking-iterator shape as the local backends, so the
scheduler and chat sessions drive it unchanged. Besides OpenAI's sampling fields it sends
`top_k`, and the repetition penalty under both its names: `repetition_penalty` (vLLM,
balabol serve) and `repeat_penalty` (llama.cpp's server and llama-cpp-python's).

It has no tokenizer: the server holds the model, so it cannot score logits (perplexity),
and a chat session trims history on an estimate (REMOTE_CHARS_PER_TOKEN) while the server
enforces its context itself.

Example: `BALABOL_REMOTE_URL=http://gpu-box:8000/v1 balabol chat --format remote`.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

from balabol.errors import ConfigError, RemoteError
from runtime.base import GenerationConfig
from runtime.decoding import Stats

URL_ENV, KEY_ENV, MODEL_ENV = "BALABOL_REMOTE_URL", "BALABOL_REMOTE_KEY", "BALABOL_REMOTE_MODEL"
CONTEXT = 2048  # what a chat session trims to; the server enforces its own context
REMOTE_CHARS_PER_TOKEN = 3  # a cautious estimate (English BPE averages about 4)
TIMEOUT = 600  # seconds without a byte from the server (a long prompt on a slow CPU)
# OpenAI finish_reason -> the runtime's stopped_by
STOPPED_BY = {"stop": "eos", "length": "length"}


@dataclass
class RemoteBackend:
    url: str
    api_key: str | None = None
    model: str | None = None
    context_length: int = CONTEXT
    format: str = "remote"
    tokenizer: None = None  # the server has it
    # it only forwards requests: the scheduler keeps `parallel` of them open at once
    concurrent: bool = True

    def __post_init__(self):
        self.url = self.url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{URL_ENV}={self.url!r} is not an http(s) URL; give the server's base URL, "
                "e.g. http://localhost:8000/v1"
            )
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        self.artifact = self.model or self.url
        self._local = threading.local()

    @property
    def last_stats(self) -> Stats | None:
        """The stats of the calling thread's last reply (requests run in several threads)."""
        return getattr(self._local, "stats", None)

    @classmethod
    def from_env(cls, model: str | None = None) -> RemoteBackend:
        url = os.environ.get(URL_ENV, "").strip()
        if not url:
            raise ConfigError(
                f"--format remote needs {URL_ENV}: the base URL of an OpenAI-compatible "
                "server, e.g. http://localhost:8000/v1 (`balabol serve`, llama.cpp's server, "
                f"vLLM, Ollama); {KEY_ENV} and {MODEL_ENV} are optional"
            )
        return cls(
            url,
            api_key=os.environ.get(KEY_ENV) or None,
            model=os.environ.get(MODEL_ENV) or model,
        )

    # --- the Backend protocol ------------------------------------------------------------
    def stream(
        self,
        messages,
        config: GenerationConfig = GenerationConfig(),
        *,
        cancel: threading.Event | None = None,
        key: Hashable | None = None,
    ) -> Iterator[str]:
        """The reply to a chat, streamed; `key` names the chat (sent as `user`, which
        balabol serve uses to keep the chat's KV state)."""
        body = {"messages": [dict(m) for m in messages]}
        if key is not None:
            body["user"] = str(key)
        return self._events("chat/completions", body, config, cancel)

    def generate(self, messages, config=GenerationConfig(), *, cancel=None, key=None) -> str:
        return "".join(self.stream(messages, config, cancel=cancel, key=key))

    def complete(self, text: str, config=GenerationConfig(), *, cancel=None) -> Iterator[str]:
        """Plain continuation (/v1/completions): the server applies no chat template."""
        return self._events("completions", {"prompt": text}, config, cancel)

    def encode_chat(self, messages, *, system: str | None = None) -> list[int]:
        """A stand-in for the prompt's tokens, as long as the estimate of their number:
        chat sessions trim the history by its length (runtime/session.py `fit`)."""
        chars = sum(len(m["content"]) + 16 for m in messages)  # + the template's markup
        return [0] * (chars // REMOTE_CHARS_PER_TOKEN + 1)

    def logits(self, ids):
        raise RemoteError(
            "--format remote cannot score logits (perplexity, bits per byte, the parity "
            "gate): the server holds the model and OpenAI's API returns no logits; score a "
            "local format (--artifact NAME --format torch|onnx|gguf-...)"
        )

    logits_batch = logits

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass

    # --- HTTP ----------------------------------------------------------------------------
    def _events(self, route: str, body: dict, config: GenerationConfig, cancel) -> Iterator[str]:
        body = {
            **body,
            **({"model": self.model} if self.model else {}),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "top_k": config.top_k,
            "repetition_penalty": config.repetition_penalty,
            "repeat_penalty": config.repetition_penalty,
            **({"seed": config.seed} if config.seed is not None else {}),
            **({"stop": list(config.stop)} if config.stop else {}),
        }
        t0 = time.perf_counter()
        ttft, n, usage, finish = 0.0, 0, None, None
        resp = self._post(route, body)
        try:
            for raw in resp:
                if cancel is not None and cancel.is_set():
                    finish = "cancel"
                    break
                line = raw.decode("utf-8").strip()
                if not line.startswith("data:"):
                    continue  # blank lines between events, ": keep-alive" comments
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    raise RemoteError(f"{self.url}/{route}: {_message(event)}")
                usage = event.get("usage") or usage
                for choice in event.get("choices") or []:
                    finish = choice.get("finish_reason") or finish
                    piece = (choice.get("delta") or {}).get("content") or choice.get("text")
                    if piece:
                        n += 1
                        ttft = ttft or time.perf_counter() - t0
                        yield piece
        except (OSError, json.JSONDecodeError) as e:
            raise RemoteError(f"{self.url}/{route}: the reply stream broke off ({e})") from e
        finally:
            resp.close()  # a reply stopped early: closing tells the server to cancel it
            self._local.stats = Stats(
                prompt_tokens=(usage or {}).get("prompt_tokens", 0),
                new_tokens=(usage or {}).get("completion_tokens", n),
                ttft=ttft,
                seconds=time.perf_counter() - t0,
                stopped_by=STOPPED_BY.get(finish, finish or "cancel"),
            )

    def _post(self, route: str, body: dict):
        url = f"{self.url}/{route}"
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            return urllib.request.urlopen(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as e:
            detail = _message(_json(e.read()))
            hint = {
                401: f"check {KEY_ENV} (the server's API key)",
                403: f"check {KEY_ENV} (the server's API key)",
                404: f"check {URL_ENV} (the base URL, ending in /v1) and {MODEL_ENV} "
                f"(GET {self.url}/models lists the server's models)",
                429: "the server is busy; retry later",
            }.get(e.code, "see the server's log")
            raise RemoteError(f"{url} answered {e.code}: {detail}; {hint}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise RemoteError(
                f"cannot reach {url} ({reason}); check that the server is running and "
                f"{URL_ENV} points at it"
            ) from None


def _json(raw: bytes):
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace")[:300]


def _message(body) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message"))
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return str(body)
