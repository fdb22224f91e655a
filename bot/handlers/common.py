"""What the handler modules share.

Who the bot answers: everyone in a private chat; in groups, only a message that mentions
the bot or replies to it (a matching filter hands the handler `text` without the mention).
And editing a menu in place, where tapping the current value is not an error, and a menu
that is gone (deleted, too old to edit) is sent anew.

Example: in a group, "@balabol_bot tell me a joke" is answered as "tell me a joke".
"""

from __future__ import annotations

import re

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message


def _mention(username: str | None) -> re.Pattern | None:
    return re.compile(rf"@{re.escape(username)}\b", re.IGNORECASE) if username else None


async def addressed(message: Message, bot: Bot) -> bool | dict:
    text = message.text if message.text is not None else message.caption
    if message.chat.type == "private":
        return {"text": text}
    me = await bot.me()
    replied = message.reply_to_message is not None and (
        message.reply_to_message.from_user is not None
        and message.reply_to_message.from_user.id == me.id
    )
    mention = _mention(me.username)
    mentioned = bool(text and mention and mention.search(text))
    mentioned |= any(
        e.type == "text_mention" and e.user is not None and e.user.id == me.id
        for e in message.entities or message.caption_entities or []
    )
    if not (replied or mentioned):
        return False
    return {"text": mention.sub("", text).strip() if text and mention else text}


async def unknown_command(message: Message, bot: Bot) -> bool | dict:
    """A /command no handler took; in groups only when it names this bot (/cmd@this_bot)."""
    text = message.text or ""
    if not text.startswith("/"):
        return False
    name, _, target = text.split(maxsplit=1)[0].partition("@") if text.strip() else ("/", "", "")
    if message.chat.type != "private":
        me = await bot.me()
        if not target or target.lower() != (me.username or "").lower():
            return False
    return {"unknown": name}


# what Telegram says when the menu's message cannot be edited any more
GONE = ("message to edit not found", "message can't be edited")


async def edit_menu(query: CallbackQuery, text: str, markup: InlineKeyboardMarkup) -> None:
    """Show the updated menu in the menu's message, or in a new one when that is gone.

    The caller has answered the query already (the client's spinner is over)."""
    if isinstance(query.message, Message):
        try:
            await query.message.edit_text(text, reply_markup=markup)
            return
        except TelegramBadRequest as e:
            if "not modified" in e.message:
                return
            if not any(gone in e.message for gone in GONE):
                raise
    # deleted, too old, or inaccessible (Telegram sends only its chat): a fresh menu
    chat_id = query.message.chat.id if query.message is not None else query.from_user.id
    await query.bot.send_message(chat_id=chat_id, text=text, reply_markup=markup)
