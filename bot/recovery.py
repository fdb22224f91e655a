"""After a crash (`kill -9`, a power cut): finish what the last run left half-done.

The last run stored each accepted message and each reply as it streamed (Store.turns).
At start-up, before taking updates, every turn still open is settled:

- a reply that was cut: its text so far goes into the history, and the Telegram message
  that shows it is edited to say it was cut short by a restart (/retry gives a whole one);
- a message that was accepted but never answered: it goes into the history and the user
  is told the bot restarted before answering (/retry answers it); several such messages
  of one user in one chat are told once.

Example: `kill -9 $(pgrep -f "balabol bot")`, start it again: the cut reply says so.
"""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import ReplyParameters

from bot import texts
from bot.replies import compose
from bot.storage import Store, Turn
from bot.streaming import LiveMessage

log = logging.getLogger(__name__)


async def recover(store: Store, bot: Bot) -> int:
    """Settle every open turn (see the module's docstring); how many there were."""
    turns = store.open_turns()
    waiting: dict[tuple[int, int], list[Turn]] = {}  # never started, per chat and user
    for turn in turns:
        if turn.started:
            await _cut(store, bot, turn)
        else:
            waiting.setdefault((turn.chat_id, turn.user_id), []).append(turn)
    for group in waiting.values():
        await _unanswered(store, bot, group)
    if turns:
        log.info("recovered %d turns left open by the last run", len(turns))
    return len(turns)


async def _cut(store: Store, bot: Bot, turn: Turn) -> None:
    if turn.retry and turn.reply is None:  # a /retry that said nothing: the old one stands
        store.drop_turns([turn.id])
    else:
        store.close_turn(turn.id, turn.chat_id, turn.text, turn.reply, replace_last=turn.retry)
    try:
        if turn.shown:
            live = LiveMessage(bot, turn.chat_id, reply_to=turn.reply_to, sent=turn.shown)
            await live.show(compose(turn.reply or "", texts.CUT_BY_CRASH))
        else:
            await _tell(bot, turn.chat_id, turn.reply_to, texts.RESTARTED_UNANSWERED)
    except TelegramAPIError as e:  # blocked, chat gone: the history is right either way
        log.warning("chat %s: cannot mark the cut reply: %s", turn.chat_id, e)


async def _unanswered(store: Store, bot: Bot, group: list[Turn]) -> None:
    said = [t.text for t in group if t.text.strip()]
    if said:
        last = group[-1]
        turn_id = store.start_turn(
            [t.id for t in group], "\n".join(said), reply_to=last.reply_to, retry=False
        )
        store.close_turn(turn_id, last.chat_id, "\n".join(said), None, replace_last=False)
    else:  # a /retry that never started: nothing to keep
        store.drop_turns([t.id for t in group])
    try:
        await _tell(bot, group[-1].chat_id, group[-1].reply_to, texts.RESTARTED_UNANSWERED)
    except TelegramAPIError as e:
        log.warning("chat %s: cannot tell about the restart: %s", group[-1].chat_id, e)


async def _tell(bot: Bot, chat_id: int, reply_to: int | None, text: str) -> None:
    await bot.send_message(
        chat_id=chat_id,
        text=text,
        reply_parameters=(
            ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)
            if reply_to
            else None
        ),
    )
