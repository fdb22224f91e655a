"""The handlers: one Router per module, composed in order by `routers()`.

Order matters: known commands first, then chat (which also answers unknown commands),
errors last. Each module exposes `router()`, a fresh Router, so a process can build more
than one Dispatcher (tests restart the bot in-process).
"""

from aiogram import Router

from bot.handlers import chat, commands, errors, model, settings


def routers() -> list[Router]:
    return [commands.router(), model.router(), settings.router(), chat.router(), errors.router()]
