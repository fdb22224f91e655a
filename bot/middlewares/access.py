"""The allow-list: when BALABOL_ALLOWED_USERS is set, only those users (and the admins)
are answered; others are told their user id, so they can ask the owner to add it.

Registered as an inner middleware: it runs only for events a handler would take, so a
stranger's chatter in a group (not addressed to the bot) gets no refusal either.
Example: `BALABOL_ALLOWED_USERS=111,222 BALABOL_ADMINS=111 balabol bot`.
"""

from __future__ import annotations

from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, Message

from bot import texts


class AllowList(BaseMiddleware):
    def __init__(self, allowed: list[int], admins: list[int]):
        self.allowed = (set(allowed) | set(admins)) if allowed else set()  # empty: everyone

    async def __call__(self, handler, event, data):
        user = data.get("event_from_user")
        if not self.allowed or (user is not None and user.id in self.allowed):
            return await handler(event, data)
        refusal = texts.NOT_ALLOWED.format(user_id=user.id if user else "unknown")
        if isinstance(event, Message):
            await event.reply(refusal)
        elif isinstance(event, CallbackQuery):
            await event.answer(refusal, show_alert=True)
        return None
