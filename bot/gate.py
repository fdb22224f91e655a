"""The one send gate: every Bot API call the bot makes passes here (a session middleware).

Telegram's limits (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this):
about 1 message per second into one chat, 20 per minute into a group, 30 per second
overall; beyond them it answers 429 with `retry_after`. So:

- a call that sends into a chat (sendMessage, editMessageText, …) goes out at least
  `chat_interval` (groups: `group_interval`) after the chat's previous one, in the order
  the calls asked (a streamed edit and a refusal into one chat queue behind each other),
  and at least 1/`rate` seconds after any other chat's;
- a 429 for a chat closes that chat until its `retry_after` has passed: no call into it
  (also a typing action, or a call already waiting for its slot) goes out in the window,
  and other chats are not held up; the failed call is sent again after the window;
- time is read through a `Clock` (tests pass a manual one: waits are exact and instant).

Example: `BALABOL_CHAT_INTERVAL=1 BALABOL_GROUP_INTERVAL=3 BALABOL_SEND_RATE=30 balabol bot`.
"""

from __future__ import annotations

import asyncio
import logging
import math

from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from aiogram.exceptions import TelegramRetryAfter

log = logging.getLogger(__name__)

MAX_RETRIES = 5
PRUNE_AT = 10_000  # chats remembered before the long-idle ones are forgotten
# calls into a chat that are not messages: not paced, but they respect a closed chat
UNPACED = frozenset({"SendChatAction", "AnswerCallbackQuery"})
PACED_PREFIXES = ("Send", "Edit", "Copy", "Forward", "Delete", "Stop")


class Clock:
    """The event loop's time and sleep: what pacing and flood control wait on.

    A seam for tests: a manual clock makes "at least `interval` apart" exact and instant.
    """

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class SendGate(BaseRequestMiddleware):
    def __init__(
        self,
        *,
        chat_interval: float = 1.0,
        group_interval: float = 3.0,
        rate: float = 30.0,
        clock: Clock | None = None,
    ):
        if chat_interval < 0 or group_interval < 0 or rate <= 0:
            raise ValueError(
                f"bad send gate: chat_interval={chat_interval}, group_interval={group_interval}"
                f" (seconds, >= 0), rate={rate} (per second, > 0)"
            )
        self.chat_interval, self.group_interval = chat_interval, group_interval
        self.rate, self.clock = rate, clock or Clock()
        self._sent: dict[int | str, float] = {}  # chat -> when its last paced call went out
        self._locks: dict[int | str, asyncio.Lock] = {}
        self._closed: dict[int | str, float] = {}  # chat -> the end of its 429 window
        self._next_any = -math.inf  # the global slot

    def interval(self, chat: int | str) -> float:
        group = isinstance(chat, str) or chat < 0  # "@channel" or a negative group id
        return self.group_interval if group else self.chat_interval

    def closed_until(self, chat: int | str) -> float:
        return self._closed.get(chat, -math.inf)

    async def __call__(self, make_request, bot, method):
        chat = getattr(method, "chat_id", None)
        name = type(method).__name__
        paced = chat is not None and name not in UNPACED and name.startswith(PACED_PREFIXES)
        for attempt in range(MAX_RETRIES + 1):
            await self.wait(chat, paced=paced)
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as e:
                if attempt == MAX_RETRIES:
                    raise
                log.warning("flood control on %s in chat %s: %s s", name, chat, e.retry_after)
                if chat is None:  # not about one chat: only this call waits
                    await self.clock.sleep(e.retry_after)
                else:
                    self.close(chat, e.retry_after)
        raise AssertionError("unreachable")

    def close(self, chat: int | str, seconds: float) -> None:
        """Telegram said 429 for `chat`: nothing goes into it for `seconds`."""
        until = self.clock.time() + seconds
        self._closed[chat] = max(self.closed_until(chat), until)

    async def wait(self, chat: int | str | None, *, paced: bool = True) -> None:
        """Until a call into `chat` may go out (None: a call about no chat)."""
        if chat is None:
            return
        if not paced:
            await self._until(lambda: self.closed_until(chat))
            return
        # one waiter per chat at a time, first come first served: calls keep their order
        async with self._locks.setdefault(chat, asyncio.Lock()):
            await self._until(
                lambda: max(
                    self._sent.get(chat, -math.inf) + self.interval(chat),
                    self.closed_until(chat),
                    self._next_any,
                )
            )
            now = self.clock.time()
            self._sent[chat], self._next_any = now, now + 1 / self.rate
        if len(self._sent) > PRUNE_AT:
            self._prune(now)

    def _prune(self, now: float) -> None:
        """Forget chats whose last send and 429 window are long past (a bot meets many)."""
        horizon = now - max(self.chat_interval, self.group_interval)
        for chat in [c for c, at in self._sent.items() if at < horizon]:
            lock = self._locks.get(chat)
            if (lock is None or not lock.locked()) and self.closed_until(chat) < now:
                self._sent.pop(chat)
                self._locks.pop(chat, None)
                self._closed.pop(chat, None)

    async def _until(self, opens) -> None:
        """Sleep until the clock reaches `opens()` (read again after each sleep: a 429 or
        another chat's send may have moved it)."""
        while (at := opens()) > (now := self.clock.time()):
            await self.clock.sleep(at - now)
