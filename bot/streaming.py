"""Streaming a reply into Telegram: send a message, then edit it as the text grows.

- at most one send/edit per `interval` seconds per chat (`Pacer`);
- flood control: every request that gets 429 waits `retry_after` and is sent again
  (`RetryAfterMiddleware`, on the bot's session, so it covers every call);
- replies longer than 4096 characters continue in new messages, split at a paragraph,
  line, sentence or word boundary (`split_message`);
- a typing action while the model works (`typing`);
- the runtime's blocking job iterator is read off the event loop (`job_pieces`);
- pacing and flood control read time through a `Clock` (tests pass a manual one).

Example: `BALABOL_EDIT_INTERVAL=1.5 balabol bot` edits less often in busy groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from concurrent.futures import Executor

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramRetryAfter
from aiogram.types import ReplyParameters

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 4096  # Telegram's limit for one message's text
TYPING_EVERY = 4.5  # a typing action shows for about 5 seconds
MAX_RETRIES = 5
# where to cut a long reply, best first; a cut must keep at least half of the limit
BOUNDARIES = (re.compile(r"\n\s*\n"), re.compile(r"\n"), re.compile(r"[.!?…](?=\s)"))


class Clock:
    """The event loop's time and sleep: what pacing and flood control wait on.

    A seam for tests: a manual clock makes "at least `interval` apart" exact and instant.
    """

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class RetryAfterMiddleware(BaseRequestMiddleware):
    """Honour Telegram's flood control: wait retry_after seconds, then send again."""

    def __init__(self, clock: Clock | None = None):
        self.clock = clock or Clock()

    async def __call__(self, make_request, bot, method):
        for attempt in range(MAX_RETRIES + 1):
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as e:
                if attempt == MAX_RETRIES:
                    raise
                log.warning(
                    "flood control on %s: waiting %s s", type(method).__name__, e.retry_after
                )
                await self.clock.sleep(e.retry_after)
        raise AssertionError("unreachable")


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Chunks of at most `limit` characters, cut at the best boundary in each window."""
    chunks = []
    while len(text) > limit:
        window = text[:limit]
        cut = 0
        for pattern in BOUNDARIES:
            ends = [m.end() for m in pattern.finditer(window)]
            if ends and ends[-1] >= limit // 2:
                cut = ends[-1]
                break
        if not cut:
            space = window.rfind(" ")
            cut = space + 1 if space >= limit // 2 else limit
        chunks.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    chunks.append(text)
    return [c for c in chunks if c.strip()] or [text]


class Pacer:
    """Per-chat slots at least `interval` seconds apart (Telegram: ~1 message/s per chat)."""

    def __init__(self, interval: float, clock: Clock | None = None):
        self.interval, self.clock = interval, clock or Clock()
        self._next: dict[int, float] = {}

    async def slot(self, chat_id: int) -> None:
        now = self.clock.time()
        at = max(now, self._next.get(chat_id, 0.0))
        self._next[chat_id] = at + self.interval
        if at > now:
            await self.clock.sleep(at - now)


class LiveMessage:
    """A reply Telegram shows while it grows: one or more messages, edited in place."""

    def __init__(self, bot: Bot, chat_id: int, *, reply_to: int | None, pacer: Pacer):
        self.bot, self.chat_id, self.reply_to, self.pacer = bot, chat_id, reply_to, pacer
        self.sent: list[tuple[int, str]] = []  # (message id, text it shows)

    async def show(self, text: str) -> None:
        """Make Telegram show `text` (split as needed); only changed messages are edited."""
        for i, chunk in enumerate(split_message(text if text.strip() else "…")):
            if i < len(self.sent):
                if self.sent[i][1] != chunk:
                    await self._edit(i, chunk)
            else:
                await self._send(chunk)

    async def _send(self, chunk: str) -> None:
        await self.pacer.slot(self.chat_id)
        first = not self.sent and self.reply_to is not None
        msg = await self.bot.send_message(
            chat_id=self.chat_id,
            text=chunk,
            reply_parameters=(
                ReplyParameters(message_id=self.reply_to, allow_sending_without_reply=True)
                if first
                else None
            ),
        )
        self.sent.append((msg.message_id, chunk))

    async def _edit(self, i: int, chunk: str) -> None:
        await self.pacer.slot(self.chat_id)
        message_id = self.sent[i][0]
        try:
            await self.bot.edit_message_text(
                chat_id=self.chat_id, message_id=message_id, text=chunk
            )
        except TelegramBadRequest as e:
            if "not modified" in e.message:
                pass
            elif "not found" in e.message:  # the user deleted it: carry on in a new one
                msg = await self.bot.send_message(chat_id=self.chat_id, text=chunk)
                message_id = msg.message_id
            else:
                raise
        self.sent[i] = (message_id, chunk)


@contextlib.asynccontextmanager
async def typing(bot: Bot, chat_id: int):
    """Show "typing…" in the chat until the block ends; a failed action is not an error."""

    async def loop():
        while True:
            with contextlib.suppress(TelegramAPIError):
                await bot.send_chat_action(chat_id=chat_id, action="typing")
            await asyncio.sleep(TYPING_EVERY)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def job_pieces(job, executor: Executor) -> AsyncIterator[str]:
    """A runtime Job's text pieces, read in `executor` so the event loop never blocks.

    The iterator's blocking `get` runs in a thread per piece; the job's error, if any,
    is raised here when the pieces run out.
    """
    loop = asyncio.get_running_loop()
    it = iter(job)
    done = object()
    while (piece := await loop.run_in_executor(executor, next, it, done)) is not done:
        yield piece


async def stream(
    live: LiveMessage, pieces: AsyncIterator[str], *, interval: float, said: list[str]
) -> None:
    """Show the first piece at once, then the growing text at most once per interval.

    Pieces are appended to `said` as they come, so the caller keeps what was generated
    even when showing it fails half-way.
    """
    clock = live.pacer.clock  # the same time the sends are paced by
    shown_at = float("-inf")
    async for piece in pieces:
        said.append(piece)
        if clock.time() - shown_at >= interval and (text := "".join(said)).strip():
            await live.show(text)
            shown_at = clock.time()
