"""One reply, from a user's message to the stored exchange.

The story of `Replies.answer`:
1. one reply at a time per user and chat: what the user sends meanwhile is stored and
   merged into their next turn (one turn, one reply); refuse (politely) while shutting down;
2. cap the input length, then trim old turns so the prompt fits the model (runtime.session.fit);
3. the global queue: refuse when it is full, else submit to the user's model's Scheduler;
4. while waiting, show the position in line; then stream the reply with a typing action;
5. store the exchange, also when it was stopped, cut by a restart, or failed half-way; the
   turn is stored from the moment it is accepted and as it streams (bot/recovery.py reads
   it after a crash).

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
from bot.gate import Clock
from bot.models import ModelPool
from bot.storage import Prefs, Store
from bot.streaming import LiveMessage, job_pieces, stream, typing
from runtime.base import GenerationConfig
from runtime.scheduler import QueueFull
from runtime.session import Persona, fit

log = logging.getLogger(__name__)

POSITION_POLL = 0.1  # seconds between looks at a waiting job's place in line
IN_LINE_AFTER = 0.3  # seconds of waiting before the user is told their place
AFTER_GRACE = 10.0  # seconds cancelled replies get to send their last edit at shutdown


@dataclass
class Incoming:
    """An accepted message: stored (`turn_id`, a row of Store.turns) until it is answered."""

    message: Message
    text: str | None  # None: /retry
    turn_id: int


@dataclass
class Reply:
    """A user's reply in one chat, and what they sent while it runs or waits."""

    user_id: int
    chat_id: int
    job: object | None = None  # runtime.scheduler.Job once submitted
    cancelled: bool = False
    note: str = texts.STOPPED  # shown after the text when the job was cancelled
    done: asyncio.Event = field(default_factory=asyncio.Event)
    pending: list[Incoming] = field(default_factory=list)  # the next turn, merged

    def cancel(self, note: str = texts.STOPPED) -> None:
        self.cancelled, self.note = True, note
        if self.job is not None:
            self.job.cancel()

    def next_turn(self) -> list[Incoming]:
        turn, self.pending = self.pending, []
        self.job, self.cancelled, self.note = None, False, texts.STOPPED
        return turn


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
        self.clock = clock or Clock()
        self.active: dict[tuple[int, int], Reply] = {}  # (chat id, user id) -> their reply
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
    def stop(self, user_id: int, chat_id: int) -> bool:
        reply = self.active.get((chat_id, user_id))
        if reply is None:
            return False
        reply.cancel()
        return True

    # --- the story -------------------------------------------------------------------------
    async def answer(self, message: Message, text: str | None, *, retry: bool = False) -> None:
        """Reply to `text` in the message's chat (retry: regenerate the last exchange).

        While the user's reply in this chat runs or waits, what they send joins the next
        turn: the messages are merged, in order, into one turn with one reply.
        """
        user_id, chat_id = message.from_user.id, message.chat.id
        if self.closing:
            await message.reply(texts.RESTARTING)
            return
        if (reply := self.active.get((chat_id, user_id))) is not None:
            if retry:
                await message.reply(texts.RETRY_BUSY)
                return
            turn_id = self.store.open_turn(chat_id, user_id, message.message_id, text or "")
            reply.pending.append(Incoming(message, text, turn_id))
            return
        reply = self.active[chat_id, user_id] = Reply(user_id, chat_id)  # before any await
        turn_id = self.store.open_turn(chat_id, user_id, message.message_id, text or "")
        turn = [Incoming(message, text, turn_id)]
        try:
            while turn:
                if self.closing:  # merged messages that arrived as the bot began to stop
                    self.store.drop_turns([i.turn_id for i in turn])
                    await turn[-1].message.reply(texts.RESTARTING)
                    break
                await self._answer(reply, turn, retry=retry)
                turn, retry = reply.next_turn(), False
        finally:
            del self.active[chat_id, user_id]
            reply.done.set()

    async def _answer(self, reply: Reply, turn: list[Incoming], *, retry: bool) -> None:
        s, chat_id, store = self.settings, reply.chat_id, self.store
        message = turn[-1].message  # the reply answers the newest message of the turn
        ids = [i.turn_id for i in turn]

        async def refuse(why: str) -> None:
            store.drop_turns(ids)
            await message.reply(why)

        # 1. what to answer, and the history before it
        history = store.history(chat_id)
        text = "\n".join(i.text for i in turn if i.text and i.text.strip())
        if retry:
            last = store.last_exchange(chat_id)
            if last is None:
                await refuse(texts.NOTHING_TO_RETRY)
                return
            text = last[0]
            history = history[: -1 if last[1] is None else -2]
        if not text.strip():
            await refuse(texts.EMPTY)
            return
        total, notes = len(text), []
        if total > s.max_input_chars:
            text = text[: s.max_input_chars]
            notes.append(texts.TRUNCATED.format(kept=len(text), total=total))

        # 2. the global queue, the user's model, a prompt that fits
        if (waiting := self.models.waiting()) >= s.queue_size:
            await refuse(texts.BUSY_QUEUE.format(waiting=waiting))
            return
        prefs = store.prefs(reply.user_id)
        choice = self.models.resolve(prefs.artifact, prefs.format)
        try:
            model = await self.models.get(choice)
        except BalabolError as e:
            log.warning("cannot load %s / %s: %s", choice.artifact, choice.format, e)
            await refuse(texts.MODEL_UNAVAILABLE.format(model=choice.label, error=e))
            return
        config = self.config(prefs)
        try:
            messages, kept = await asyncio.to_thread(
                prepare, model.backend, self.prefix, history, text, config.max_new_tokens
            )
        except ConfigError:
            await refuse(texts.DOES_NOT_FIT.format(tokens=config.max_new_tokens))
            return
        if kept < len(text):
            text = text[:kept]
            notes = [texts.TOO_LONG_FOR_MODEL.format(kept=kept, total=total)]

        # 3. into the line
        try:
            job = reply.job = model.scheduler.submit(messages, config, key=chat_id)
        except QueueFull:
            retired = model not in self.models.loaded()
            await refuse(
                texts.MODEL_RELOADED
                if retired
                else texts.BUSY_QUEUE.format(waiting=self.models.waiting())
            )
            return
        turn_id = store.start_turn(ids, text, reply_to=message.message_id, retry=retry)
        if reply.cancelled:  # /stop or shutdown arrived while we were preparing
            job.cancel()
        for note in notes:
            await message.reply(note)

        # 4. wait, then stream; 5. store whatever was said (and as it is said)
        live = LiveMessage(message.bot, chat_id, reply_to=message.message_id)
        said: list[str] = []

        def checkpoint() -> None:
            store.save_turn(turn_id, text=text, reply="".join(said) or None, shown=live.sent)

        try:
            if await self._wait_in_line(job, live, checkpoint):
                async with typing(message.bot, chat_id):
                    pieces = job_pieces(job, self.executor)
                    await stream(
                        live,
                        pieces,
                        interval=s.edit_interval,
                        said=said,
                        clock=self.clock,
                        checkpoint=checkpoint,
                    )
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
            store.close_turn(turn_id, chat_id, text, reply_text or None, replace_last=retry)

    async def _wait_in_line(self, job, live: LiveMessage, checkpoint) -> bool:
        """Wait for the model; False when the job was cancelled in line (the worker skips
        it, so there is nothing to read and no thread should block reading it)."""
        loop, shown = asyncio.get_running_loop(), 0
        since = loop.time()
        while (position := job.position) > 0 and not job.cancel_event.is_set():
            # a job the worker is about to take reads position 1 for a moment: tell the
            # user only when they have really waited, not that they wait behind no one
            if position != shown and loop.time() - since >= IN_LINE_AFTER:
                await live.show(texts.IN_LINE.format(position=position))
                checkpoint()  # a restarted bot edits this message too
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
