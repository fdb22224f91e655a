"""Commands: /start, /help, /reset, /retry, /stop, and the admins' /reload.

(/model and /settings have their own modules, with their inline keyboards.)
Example: `/retry` answers your last message again; `/stop` cuts the current answer.
"""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandStart
from aiogram.types import BotCommand, Message

from bot import texts
from bot.config import Settings
from bot.models import ModelPool
from bot.replies import Replies
from bot.storage import Store

# the menu Telegram shows (set_my_commands at start-up), in this order
COMMANDS = {
    "start": "say hello",
    "help": "what I can do",
    "reset": "forget this chat's history",
    "model": "choose the model that answers you",
    "settings": "temperature and reply length",
    "retry": "answer my last message again",
    "stop": "stop the current answer",
}
MENU = [BotCommand(command=name, description=about) for name, about in COMMANDS.items()]


async def start(message: Message) -> None:
    await message.answer(texts.START.format(name=message.from_user.first_name))


async def help_(message: Message, settings: Settings) -> None:
    listing = "\n".join(f"/{name} — {about}" for name, about in COMMANDS.items())
    text = texts.HELP.format(
        commands=listing,
        max_chars=settings.max_input_chars,
        limit=settings.rate_limit,
        window=settings.rate_window,
    )
    if message.from_user.id in settings.admins:
        text += texts.ADMIN_HELP
    await message.answer(text)


async def reset(message: Message, store: Store) -> None:
    store.reset(message.chat.id)
    await message.reply(texts.RESET)


async def retry(message: Message, replies: Replies) -> None:
    await replies.answer(message, None, retry=True)


async def stop(message: Message, replies: Replies) -> None:
    stopped = replies.stop(message.from_user.id, message.chat.id)
    await message.reply(texts.STOPPING if stopped else texts.NOTHING_TO_STOP)


async def reload(message: Message, models: ModelPool, settings: Settings) -> None:
    if message.from_user.id not in settings.admins:
        await message.reply(texts.ADMINS_ONLY)
        return
    report = await models.reload()
    details = ", ".join(
        f"{what}: {', '.join(names)}"
        for what, names in (
            ("new", report.added),
            ("gone", report.removed),
            ("swapped", report.swapped),
        )
        if names
    )
    await message.reply(
        texts.RELOADED.format(choices=report.choices, details=details or "no change")
    )


def router() -> Router:
    r = Router(name="commands")
    r.message.register(start, CommandStart())
    r.message.register(help_, Command("help"))
    r.message.register(reset, Command("reset"))
    r.message.register(retry, Command("retry"))
    r.message.register(stop, Command("stop"))
    r.message.register(reload, Command("reload"))
    return r
