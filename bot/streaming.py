"""Streaming a reply into Telegram: send a message, then edit it as the text grows.

- the growing text is shown at most once per `interval` seconds (`stream`); every send
  and edit passes the one send gate (bot/gate.py: per-chat and global pacing, 429s);
- replies longer than 4096 characters continue in new messages, split at a paragraph,
  line, sentence or word boundary (`split_message`);
- a typing action while the model works (`typing`);
- the runtime's blocking job iterator is read off the event loop (`job_pieces`);
- `stream` reads time through the gate's `Clock` (tests pass a manual one).

Example: `BALABOL_EDIT_INTERVAL=1.5 balabol bot` edits less often in busy groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.types import ReplyParameters

from bot.gate import Clock

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 4096  # Telegram's limit for one message's text
TYPING_EVERY = 4.5  # a typing action shows for about 5 seconds
# where to cut a long reply, best first; a cut must keep at least half of the limit
BOUNDARIES = (re.compile(r"\n\s*\n"), re.compile(r"\n"), re.compile(r"[.!?…](?=\s)"))


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


class LiveMessage:
    """A reply Telegram shows while it grows: one or more messages, edited in place."""

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        *,
        reply_to: int | None,
        sent: list[tuple[int, str]] | None = None,
    ):
        self.bot, self.chat_id, self.reply_to = bot, chat_id, reply_to
        # (message id, text it shows); a restarted bot passes what the last run had shown
        self.sent: list[tuple[int, str]] = [tuple(s) for s in sent or []]

    async def show(self, text: str) -> None:
        """Make Telegram show `text` (split as needed); only changed messages are edited."""
        for i, chunk in enumerate(split_message(text if text.strip() else "…")):
            if i < len(self.sent):
                if self.sent[i][1] != chunk:
                    await self._edit(i, chunk)
            else:
                await self._send(chunk)

    async def _send(self, chunk: str) -> None:
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
        message_id = self.sent[i][0]
        try:
            await self.bot.edit_message_text(
                chat_id=self.chat_id, message_id=message_id, text=chunk
            )
        except TelegramBadRequest as e:
            if "not modified" in e.message:
                pass
            elif "not found" in e.message or "can't be edited" in e.message:
                # the user deleted it (or it is too old): carry on in a new one
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
    live: LiveMessage,
    pieces: AsyncIterator[str],
    *,
    interval: float,
    said: list[str],
    clock: Clock | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> None:
    """Show the first piece at once, then the growing text at most once per interval.

    Pieces are appended to `said` as they come, so the caller keeps what was generated
    even when showing it fails half-way; `checkpoint` runs before and after each show
    (the caller stores the reply so far: a killed process loses at most one edit).
    """
    clock = clock or Clock()  # the same time the sends are paced by
    shown_at = float("-inf")
    async for piece in pieces:
        said.append(piece)
        if clock.time() - shown_at >= interval and (text := "".join(said)).strip():
            if checkpoint:
                checkpoint()
            await live.show(text)
            if checkpoint:
                checkpoint()
            shown_at = clock.time()
