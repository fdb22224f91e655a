"""One reply, from a user's message to the stored exchange.

The story of `Replies.answer`:
1. one in-flight request per user; refuse (politely) while shutting down;
2. cap the input length, then trim old turns so the prompt fits the model (runtime.session.fit);
3. the global queue: refuse when it is full, else submit to the user's model's Scheduler;
4. while waiting, show the position in line; then stream the reply with a typing action;
5. store the exchange, also when it was stopped, cut by a restart, or failed half-way.

Generation itself is the runtime's: it runs in the Scheduler's worker thread.
Example: `/stop` calls `Replies.stop`, which cancels the user's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiogram.exceptions import TelegramAPIError
from aiogram.types import Message

from balabol.errors import BalabolError, ConfigError
from bot import texts
from bot.config import Settings
from bot.models import ModelPool
from bot.storage import Prefs, Store
from bot.streaming import Clock, LiveMessage, Pacer, job_pieces, stream, typing
from runtime.base import GenerationConfig
from runtime.scheduler import QueueFull
from runtime.session import Persona, fit

log = logging.getLogger(__name__)

POSITION_POLL = 0.1  # seconds between looks at a waiting job's place in line
IN_LINE_AFTER = 0.3  # seconds of waiting before the user is told their place
AFTER_GRACE = 10.0  # seconds cancelled replies get to send their last edit at shutdown


@dataclass
class Reply:
    user_id: int
    chat_id: int
    job: object | None = None  # runtime.scheduler.Job once submitted
    cancelled: bool = False
    note: str = texts.STOPPED  # shown after the text when the job was cancelled
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def cancel(self, note: str = texts.STOPPED) -> None:
        self.cancelled, self.note = True, note
        if self.job is not None:
            self.job.cancel()


def prepare(backend, prefix, history, text: str, max_new_tokens: int) -> tuple[list, int]:
    """(messages that fit the context, characters of `text` kept).

    Old turns go first (runtime.session.fit); a message too long on its own is cut to
    the longest prefix that fits (binary search over its length).
    """

    def user(t):
        return {"role": "user", "content": t}

    try:
        msgs = fit(
            backend,
            [*prefix, *history, user(text)],
            max_new_tokens=max_new_tokens,
            keep_first=len(prefix),
        )
        return msgs, len(text)
    except ConfigError:
        pass
    budget = backend.context_length - max_new_tokens
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(backend.encode_chat([*prefix, user(text[:mid])])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        raise ConfigError(f"the context ({backend.context_length} tokens) has no room")
    return [*prefix, user(text[:lo])], lo


def compose(text: str, note: str | None) -> str:
    body = text if text.strip() else ("" if note else texts.NO_ANSWER)
    return f"{body}\n\n{note}".strip() if note else body


class Replies:
    def __init__(
        self, *, settings: Settings, store: Store, models: ModelPool, clock: Clock | None = None
    ):
        self.settings, self.store, self.models = settings, store, models
        self.pacer = Pacer(settings.edit_interval, clock)
        self.active: dict[int, Reply] = {}  # user id -> their in-flight reply
        self.closing = False
        # reads job pieces; only running jobs read, so a few threads are plenty
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="balabol-read")
        persona = Persona.load(settings.persona) if settings.persona else Persona()
        system = settings.system_prompt or persona.system
        self.prefix = [{"role": "system", "content": system}] if system else []
        self.prefix += persona.messages()

    def config(self, prefs: Prefs) -> GenerationConfig:
        s = self.settings
        return GenerationConfig(
            max_new_tokens=min(prefs.max_new_tokens or s.max_new_tokens, s.max_reply_tokens),
            temperature=s.temperature if prefs.temperature is None else prefs.temperature,
            top_k=s.top_k,
            top_p=s.top_p,
            repetition_penalty=s.repetition_penalty,
        )

    # --- commands --------------------------------------------------------------------------
    def stop(self, user_id: int) -> bool:
        reply = self.active.get(user_id)
        if reply is None:
            return False
        reply.cancel()
        return True

    def busy(self, user_id: int) -> bool:
        return user_id in self.active

    # --- the story -------------------------------------------------------------------------
    async def answer(self, message: Message, text: str | None, *, retry: bool = False) -> None:
        """Reply to `text` in the message's chat (retry: regenerate the last exchange)."""
        user_id, chat_id = message.from_user.id, message.chat.id
        if self.closing:
            await message.reply(texts.RESTARTING)
            return
        if user_id in self.active:
            await message.reply(texts.BUSY_USER)
            return
        reply = self.active[user_id] = Reply(user_id, chat_id)  # claimed before any await
        try:
            await self._answer(reply, message, text, retry=retry)
        finally:
            del self.active[user_id]
            reply.done.set()

    async def _answer(self, reply: Reply, message: Message, text, *, retry: bool) -> None:
        s, chat_id = self.settings, reply.chat_id
        # 1. what to answer, and the history before it
        history = self.store.history(chat_id)
        if retry:
            last = self.store.last_exchange(chat_id)
            if last is None:
                await message.reply(texts.NOTHING_TO_RETRY)
                return
            text = last[0]
            history = history[: -1 if last[1] is None else -2]
        if not text or not text.strip():
            await message.reply(texts.EMPTY)
            return
        total, notes = len(text), []
        if total > s.max_input_chars:
            text = text[: s.max_input_chars]
            notes.append(texts.TRUNCATED.format(kept=len(text), total=total))

        # 2. the global queue, the user's model, a prompt that fits
        if (waiting := self.models.waiting()) >= s.queue_size:
            await message.reply(texts.BUSY_QUEUE.format(waiting=waiting))
            return
        prefs = self.store.prefs(reply.user_id)
        choice = self.models.resolve(prefs.artifact, prefs.format)
        try:
            model = await self.models.get(choice)
        except BalabolError as e:
            log.warning("cannot load %s / %s: %s", choice.artifact, choice.format, e)
            await message.reply(texts.MODEL_UNAVAILABLE.format(model=choice.label, error=e))
            return
        config = self.config(prefs)
        try:
            messages, kept = await asyncio.to_thread(
                prepare, model.backend, self.prefix, history, text, config.max_new_tokens
            )
        except ConfigError:
            await message.reply(texts.DOES_NOT_FIT.format(tokens=config.max_new_tokens))
            return
        if kept < len(text):
            text = text[:kept]
            notes = [texts.TOO_LONG_FOR_MODEL.format(kept=kept, total=total)]

        # 3. into the line
        try:
            job = reply.job = model.scheduler.submit(messages, config, key=chat_id)
        except QueueFull:
            retired = model not in self.models.loaded()
            await message.reply(
                texts.MODEL_RELOADED
                if retired
                else texts.BUSY_QUEUE.format(waiting=self.models.waiting())
            )
            return
        if reply.cancelled:  # /stop or shutdown arrived while we were preparing
            job.cancel()
        for note in notes:
            await message.reply(note)

        # 4. wait, then stream; 5. store whatever was said
        live = LiveMessage(message.bot, chat_id, reply_to=message.message_id, pacer=self.pacer)
        said: list[str] = []
        try:
            if await self._wait_in_line(job, live):
                async with typing(message.bot, chat_id):
                    pieces = job_pieces(job, self.executor)
                    await stream(live, pieces, interval=s.edit_interval, said=said)
            note = reply.note if job.cancel_event.is_set() else None
            await live.show(compose("".join(said), note))
        except TelegramAPIError as e:  # e.g. the user blocked the bot: nobody to show it to
            job.cancel()
            log.warning("chat %s: cannot deliver the reply: %s", chat_id, e)
        except Exception:
            log.exception("chat %s: generation failed", chat_id)
            with contextlib.suppress(TelegramAPIError):
                await live.show(compose("".join(said), texts.FAILED))
        finally:
            reply_text = "".join(said)
            self.store.add_exchange(chat_id, text, reply_text or None, replace_last=retry)

    async def _wait_in_line(self, job, live: LiveMessage) -> bool:
        """Wait for the model; False when the job was cancelled in line (the worker skips
        it, so there is nothing to read and no thread should block reading it)."""
        loop, shown = asyncio.get_running_loop(), 0
        since = loop.time()
        while (position := job.position) > 0 and not job.cancel_event.is_set():
            # a job the worker is about to take reads position 1 for a moment: tell the
            # user only when they have really waited, not that they wait behind no one
            if position != shown and loop.time() - since >= IN_LINE_AFTER:
                await live.show(texts.IN_LINE.format(position=position))
                shown = position
            await asyncio.sleep(POSITION_POLL)
        return job.position == 0

    # --- shutdown --------------------------------------------------------------------------
    async def shutdown(self, grace: float) -> None:
        """Refuse new requests; let in-flight replies finish for `grace` seconds, then cut
        the rest with a note. Every exchange is stored either way."""
        self.closing = True
        if self.active:
            log.info("waiting up to %g s for %d replies", grace, len(self.active))
            await _all_done(self.active.values(), grace)
        if self.active:
            for reply in self.active.values():
                reply.cancel(texts.CUT_BY_RESTART)
            await _all_done(self.active.values(), AFTER_GRACE)
        self.executor.shutdown(wait=False, cancel_futures=True)


async def _all_done(replies, timeout: float) -> None:
    waits = [asyncio.create_task(r.done.wait()) for r in list(replies)]
    if waits:
        _, pending = await asyncio.wait(waits, timeout=timeout)
        for task in pending:
            task.cancel()
