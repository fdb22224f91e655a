"""Chat: a plain message gets a streamed reply; unknown commands, non-text and unknown
buttons get a short note.

Example: send "Hello!" in a private chat; in a group, "@your_bot Hello!".
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import CallbackQuery, Message

from bot import texts
from bot.handlers.common import addressed, unknown_command
from bot.replies import Replies

# what a person sends that is not text; service messages (joins, pins, …) get no reply
NOT_TEXT = (
    "animation", "audio", "document", "live_photo", "paid_media", "photo", "sticker",
    "story", "video", "video_note", "voice", "checklist", "contact", "dice", "game",
    "poll", "venue", "location",
)  # fmt: skip


async def unknown(message: Message, unknown: str) -> None:
    await message.reply(texts.UNKNOWN_COMMAND.format(command=unknown))


async def text(message: Message, text: str, replies: Replies) -> None:
    await replies.answer(message, text)


async def not_text(message: Message) -> None:
    await message.reply(texts.NOT_TEXT)


async def stale_button(query: CallbackQuery) -> None:
    """A button no handler knows (an old menu, a forged query): end the client's spinner."""
    await query.answer(texts.STALE_BUTTON)


def router() -> Router:
    r = Router(name="chat")
    r.message.register(unknown, F.text, unknown_command)
    r.message.register(text, F.text.is_not(None), addressed)
    r.message.register(not_text, F.content_type.in_(NOT_TEXT), addressed)
    r.callback_query.register(stale_button)
    return r
