"""The central error handler: log it, count it, and tell the user something went wrong
(a BalabolError's own message when it is one: it says what to do).

Example: a bug in a handler shows "⚠️ Something went wrong…" instead of silence.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

from aiogram import Router
from aiogram.exceptions import TelegramAPIError
from aiogram.types import ErrorEvent, Message

from balabol.errors import BalabolError
from bot import texts

log = logging.getLogger(__name__)


@dataclass
class Health:
    """The latest errors since start-up (tests assert there are none)."""

    errors: list[str] = field(default_factory=list)
    keep: int = 100


async def on_error(event: ErrorEvent, health: Health) -> bool:
    e = event.exception
    health.errors.append(f"{type(e).__name__}: {e}")
    del health.errors[: -health.keep]
    log.error("update %s failed", event.update.update_id, exc_info=e)
    update = event.update
    message = update.message or (update.callback_query and update.callback_query.message)
    if isinstance(message, Message):
        with contextlib.suppress(TelegramAPIError):
            await message.answer(str(e) if isinstance(e, BalabolError) else texts.FAILED)
    return True


def router() -> Router:
    r = Router(name="errors")
    r.errors.register(on_error)
    return r
