"""A fake Telegram Bot API server on 127.0.0.1 (aiohttp, a random port), for offline tests.

It speaks the Bot API's HTTP protocol (`/bot<token>/<method>`, form or JSON parameters,
`{"ok": ..., "result": ...}` answers) for what the bot uses: getMe, getUpdates (long
polling over a queue of injected updates), sendMessage, editMessageText, sendChatAction,
setMyCommands, answerCallbackQuery, deleteWebhook, setWebhook, deleteMessage. It keeps the
chats' messages, so tests read what a user would see, records every call, and enforces
Telegram's rules that matter here (4096-character messages, "message is not modified",
a wrong token is 401). `flood(n, retry_after, chat_id=...)` answers the next n
sends/edits (into that chat) with 429, and `inside_windows()` lists the calls that
ignored a retry_after; `limits=Limits()` answers 429 as Telegram does past ~1 message a
second per chat, 20 a minute per group, 30 a second overall; `stall(method)` holds such
calls until `unstall()` (a process killed mid-reply). A chat in `blocked` answers 403, as
when a user blocks the bot. Each call is stamped with `clock` (pacing tests pass the
bot's manual clock, so gaps are exact).

Example:
    tg = FakeTelegram(); await tg.start()
    bot = Bot(tg.token, session=AiohttpSession(api=TelegramAPIServer.from_base(tg.url)))
    tg.user_says(42, "Hello"); await tg.wait_for(lambda: tg.replies_to(...))
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import ClientSession, web

TOKEN = "123456:TEST-fake-token"
BOT_USER = {"id": 123456, "is_bot": True, "first_name": "Balabol", "username": "balabol_test_bot"}
MESSAGE_LIMIT = 4096
# parameters whose values are plain text: never JSON-decoded (the text "123" stays a str)
TEXT_PARAMS = {"text", "callback_query_id", "action", "url", "secret_token", "caption"}
FLOODABLE = {"sendMessage", "editMessageText"}
STICKER = {
    "file_id": "sticker-1",
    "file_unique_id": "s1",
    "type": "regular",
    "width": 512,
    "height": 512,
    "is_animated": False,
    "is_video": False,
}
CONTENT = {  # what a non-text message carries, by kind
    "sticker": STICKER,
    "photo": [{"file_id": "photo-1", "file_unique_id": "p1", "width": 90, "height": 90}],
    "voice": {"file_id": "voice-1", "file_unique_id": "v1", "duration": 2},
    "document": {"file_id": "doc-1", "file_unique_id": "d1", "file_name": "a.pdf"},
    "location": {"latitude": 55.75, "longitude": 37.61},
}


@dataclass
class Call:
    method: str
    params: dict
    at: float  # when the server received it, on the server's clock
    status: int = 200
    result: object = None  # what it answered, when ok


@dataclass(frozen=True)
class Limits:
    """Telegram's send limits (https://core.telegram.org/bots/faq), enforced with 429."""

    chat_interval: float = 1.0  # seconds between sends into one private chat
    group_per_minute: int = 20
    per_second: int = 30  # all chats together


class BadRequest(Exception):
    def __init__(self, description: str, code: int = 400):
        super().__init__(description)
        self.description, self.code = description, code


class FakeTelegram:
    def __init__(
        self,
        token: str = TOKEN,
        *,
        me: dict | None = None,
        clock: Callable[[], float] = time.monotonic,
        limits: Limits | None = None,
    ):
        self.token, self.me, self.clock, self.limits = token, dict(me or BOT_USER), clock, limits
        self.windows: dict[int, list[tuple[float, float]]] = {}  # chat -> 429 windows
        self._sends: dict[int | None, list[float]] = {}  # chat (None: all) -> send times
        self._stalled: dict[str, asyncio.Event] = {}
        self.calls: list[Call] = []
        self.updates: list[dict] = []  # not yet confirmed by a getUpdates offset
        self.chats: dict[int, dict] = {}
        self.messages: dict[int, dict[int, dict]] = {}  # chat id -> message id -> message
        self.webhook: dict = {}
        self.commands: list[dict] = []
        self.polls = 0  # getUpdates calls so far
        self.blocked: set[int] = set()  # chats whose user blocked the bot: 403
        self._ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._flood = {"left": 0, "retry_after": 1, "methods": FLOODABLE, "chat_id": None}
        self._wakeup = asyncio.Condition()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- server ----------------------------------------------------------------------------
    async def start(self) -> FakeTelegram:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_get("/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        self._closing = True
        async with self._wakeup:
            self._wakeup.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeTelegram:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        call = Call(method, params, at=self.clock())
        self.calls.append(call)
        if request.match_info["token"] != self.token:
            call.status = 401
            return _error(401, "Unauthorized")
        if method in self._stalled:  # held, then lost: its sender is gone by then
            await self._stalled[method].wait()
            call.status = 502
            return _error(502, "Bad Gateway")
        chat = params.get("chat_id")
        flood = self._flood
        if flood["left"] > 0 and method in flood["methods"] and flood["chat_id"] in (None, chat):
            flood["left"] -= 1
            return self._too_many(call, chat, flood["retry_after"])
        if self.limits is not None and method in FLOODABLE:
            after = self._over_limits(chat, call.at)
            if after:
                return self._too_many(call, chat, after)
        if params.get("chat_id") in self.blocked:
            call.status = 403
            return _error(403, "Forbidden: bot was blocked by the user")
        handler = getattr(self, "_" + method, None)
        if handler is None:
            call.status = 404
            return _error(404, "Not Found: method not found")
        try:
            result = handler(**params)
            if asyncio.iscoroutine(result):
                result = await result
        except BadRequest as e:
            call.status = e.code
            return _error(e.code, e.description)
        except TypeError as e:  # a required parameter is missing
            call.status = 400
            return _error(400, f"Bad Request: {e}")
        call.result = result
        return web.json_response({"ok": True, "result": result})

    def _too_many(self, call: Call, chat, after: int) -> web.Response:
        call.status = 429
        self.windows.setdefault(chat, []).append((call.at, call.at + after))
        return _error(429, f"Too Many Requests: retry after {after}", retry_after=after)

    def _over_limits(self, chat, now: float) -> int:
        """0 when a send into `chat` at `now` is within the limits (and counts it), else
        the retry_after Telegram would give."""
        lim = self.limits
        group = isinstance(chat, str) or (isinstance(chat, int) and chat < 0)
        span, most = (60.0, lim.group_per_minute) if group else (lim.chat_interval, 1)
        checks = [(chat, span, most), (None, 1.0, lim.per_second)]
        for key, window, allowed in checks:
            # (a microsecond's slack: sums of 1/30 s land a hair short of a whole second)
            recent = [t for t in self._sends.get(key, []) if t > now - window + 1e-6]
            self._sends[key] = recent
            if len(recent) >= allowed:
                return max(1, math.ceil(recent[0] + window - now))
        for key, _, _ in checks:
            self._sends[key].append(now)
        return 0

    @staticmethod
    async def _params(request: web.Request) -> dict:
        if request.content_type == "application/json":
            return dict(await request.json())
        raw = dict(await request.post()) if request.body_exists else {}
        raw.update(request.query)
        out = {}
        for key, value in raw.items():
            if key in TEXT_PARAMS or not isinstance(value, str):
                out[key] = value
                continue
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
        return out

    # --- Bot API methods -------------------------------------------------------------------
    def _getMe(self, **_):
        return self.me

    async def _getUpdates(self, offset: int = 0, limit: int = 100, timeout: int = 0, **_):
        self.polls += 1
        if offset:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        deadline = time.monotonic() + min(timeout, 30)
        async with self._wakeup:
            while not self.updates and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except asyncio.TimeoutError:
                    break
        return self.updates[:limit]

    def _sendMessage(self, chat_id, text=None, reply_parameters=None, reply_markup=None, **_):
        self._check_text(text)
        chat = self._chat(chat_id)
        msg = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": self.me,
            "text": text,
        }
        if reply_parameters:
            replied = self.messages.get(chat["id"], {}).get(reply_parameters["message_id"])
            if replied is not None:
                msg["reply_to_message"] = {
                    k: v for k, v in replied.items() if k != "reply_to_message"
                }
        if reply_markup:
            msg["reply_markup"] = reply_markup
        self.messages.setdefault(chat["id"], {})[msg["message_id"]] = msg
        return msg

    def _editMessageText(self, chat_id, message_id, text=None, reply_markup=None, **_):
        self._check_text(text)
        msg = self.messages.get(self._chat(chat_id)["id"], {}).get(message_id)
        if msg is None:
            raise BadRequest("Bad Request: message to edit not found")
        if msg["from"]["id"] != self.me["id"] or msg.get("too_old"):
            raise BadRequest("Bad Request: message can't be edited")
        if msg["text"] == text and msg.get("reply_markup") == reply_markup:
            raise BadRequest(
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup "
                "of the message"
            )
        msg["text"], msg["edit_date"] = text, int(time.time())
        if reply_markup:
            msg["reply_markup"] = reply_markup
        else:
            msg.pop("reply_markup", None)
        return msg

    def _deleteMessage(self, chat_id, message_id, **_):
        if self.messages.get(chat_id, {}).pop(message_id, None) is None:
            raise BadRequest("Bad Request: message to delete not found")
        return True

    def _sendChatAction(self, chat_id, action, **_):
        self._chat(chat_id)
        return True

    def _setMyCommands(self, commands, **_):
        self.commands = commands
        return True

    def _answerCallbackQuery(self, callback_query_id, **_):
        return True

    def _deleteWebhook(self, **_):
        self.webhook = {}
        return True

    def _setWebhook(self, url, **params):
        self.webhook = {"url": url, **params}
        return True

    def _getWebhookInfo(self, **_):
        return {
            "url": self.webhook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": 0,
        }

    def _chat(self, chat_id) -> dict:
        if chat_id not in self.chats:
            raise BadRequest("Bad Request: chat not found")
        return self.chats[chat_id]

    @staticmethod
    def _check_text(text) -> None:
        if not text or not str(text).strip():
            raise BadRequest("Bad Request: message text is empty")
        if len(text) > MESSAGE_LIMIT:
            raise BadRequest("Bad Request: message is too long")

    # --- driving the bot -------------------------------------------------------------------
    def user(self, user_id: int, first_name: str | None = None) -> dict:
        return {"id": user_id, "is_bot": False, "first_name": first_name or f"User{user_id}"}

    def message(
        self,
        user_id: int,
        text: str | None = None,
        *,
        chat_id: int | None = None,
        chat_type: str = "private",
        reply_to: dict | None = None,
        entities: list[dict] | None = None,
        **content,
    ) -> dict:
        """A user's message, kept in its chat (not delivered: see user_says, post_update)."""
        chat_id = user_id if chat_id is None else chat_id
        chat = {"id": chat_id, "type": chat_type}
        chat.update(
            {"title": f"Group {chat_id}"}
            if chat_type != "private"
            else {"first_name": f"User{user_id}"}
        )
        self.chats.setdefault(chat_id, chat)
        msg = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": self.chats[chat_id],
            "from": self.user(user_id),
        }
        if text is not None:
            msg["text"] = text
        if entities:
            msg["entities"] = entities
        if reply_to is not None:
            msg["reply_to_message"] = {k: v for k, v in reply_to.items() if k != "reply_to_message"}
        msg.update(content)
        self.messages.setdefault(chat_id, {})[msg["message_id"]] = msg
        return msg

    def user_says(self, user_id: int, text: str | None = None, **kwargs) -> dict:
        """A user sends a message: queued for getUpdates. Non-text: user_sends."""
        msg = self.message(user_id, text, **kwargs)
        self._push({"message": msg})
        return msg

    def user_sends(self, user_id: int, kind: str, **kwargs) -> dict:
        return self.user_says(user_id, None, **{kind: CONTENT[kind]}, **kwargs)

    def press(self, user_id: int, message: dict, data: str) -> str:
        """Inject a callback query: the user taps a button of a bot message."""
        query_id = str(next(self._callback_ids))
        self._push(
            {
                "callback_query": {
                    "id": query_id,
                    "from": self.user(user_id),
                    "chat_instance": "ci",
                    "message": message,
                    "data": data,
                }
            }
        )
        return query_id

    async def post_update(self, update: dict, *, secret: str | None = None) -> int:
        """Post an update to the webhook the bot set, as Telegram does; the HTTP status."""
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        update = {"update_id": next(self._ids), **update}
        async with (
            ClientSession() as http,
            http.post(self.webhook["url"], json=update, headers=headers) as resp,
        ):
            return resp.status

    def _push(self, update: dict) -> int:
        update = {"update_id": next(self._ids), **update}
        self.updates.append(update)
        asyncio.get_running_loop().create_task(self._notify())
        return update["update_id"]

    async def _notify(self) -> None:
        async with self._wakeup:
            self._wakeup.notify_all()

    def flood(
        self, n: int, retry_after: int = 1, methods=FLOODABLE, *, chat_id: int | None = None
    ) -> None:
        """Answer the next n calls of `methods` (into `chat_id`: any chat when None) with
        429 Too Many Requests."""
        self._flood = {
            "left": n,
            "retry_after": retry_after,
            "methods": set(methods),
            "chat_id": chat_id,
        }

    def stall(self, method: str) -> None:
        """Hold every `method` call unanswered until unstall(); then it fails, unapplied."""
        self._stalled[method] = asyncio.Event()

    def unstall(self) -> None:
        for event in self._stalled.values():
            event.set()
        self._stalled.clear()

    # --- observing -------------------------------------------------------------------------
    def inside_windows(self) -> list[Call]:
        """Calls into a chat while a 429's retry_after for that chat was still running."""
        return [
            c
            for c in self.calls
            for start, end in self.windows.get(c.params.get("chat_id"), [])
            if start < c.at < end
        ]

    def called(self, method: str, **match) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method == method and all(c.params.get(k) == v for k, v in match.items())
        ]

    def bot_messages(self, chat_id: int) -> list[dict]:
        return [
            m for m in self.messages.get(chat_id, {}).values() if m["from"]["id"] == self.me["id"]
        ]

    def replies_to(self, message: dict) -> list[str]:
        """Texts of the bot messages that reply to `message`, plus their continuations
        (a long reply's next parts follow without a reply link)."""
        out, following = [], False
        for m in self.messages.get(message["chat"]["id"], {}).values():
            if m["from"]["id"] != self.me["id"]:
                following = False
                continue
            replied = m.get("reply_to_message", {}).get("message_id")
            if replied == message["message_id"]:
                out.append(m["text"])
                following = True
            elif following and replied is None:
                out.append(m["text"])
            else:
                following = False
        return out

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 20, *, also=None):
        """Wait until predicate() is truthy; `also` (a task) failing ends the wait early."""
        deadline = time.monotonic() + timeout
        while not (result := predicate()):
            if also is not None and also.done():
                also.result()  # raises the task's error
                raise AssertionError("the bot stopped while waiting")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s; last calls: {self.calls[-8:]}")
            await asyncio.sleep(0.02)
        return result


def _error(code: int, description: str, **parameters) -> web.Response:
    body = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=code)
