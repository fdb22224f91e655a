"""/settings: temperature and reply length per user, by inline keyboard or by arguments.

Example: `/settings temperature 0.5`, `/settings length 64`, `/settings reset`.
"""

from __future__ import annotations

import math

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot import texts
from bot.config import Settings
from bot.handlers.common import edit_menu
from bot.storage import Store

TEMPERATURES = (0.0, 0.3, 0.7, 1.0, 1.3)
MAX_TEMPERATURE = 5.0  # runtime.base.GenerationConfig's bound
NAMES = {  # what a user may type -> the stored preference
    "temperature": "temperature",
    "temp": "temperature",
    "t": "temperature",
    "length": "max_new_tokens",
    "len": "max_new_tokens",
    "tokens": "max_new_tokens",
    "max_new_tokens": "max_new_tokens",
}


class SettingPick(CallbackData, prefix="set"):
    name: str  # temperature | max_new_tokens | reset
    value: str


def lengths(settings: Settings) -> list[int]:
    d, most = settings.max_new_tokens, settings.max_reply_tokens
    return sorted({max(1, d // 2), d, min(2 * d, most), most})


def current(settings: Settings, store: Store, user_id: int) -> dict:
    prefs = store.prefs(user_id)
    temperature = settings.temperature if prefs.temperature is None else prefs.temperature
    tokens = min(prefs.max_new_tokens or settings.max_new_tokens, settings.max_reply_tokens)
    return {"temperature": temperature, "tokens": tokens}


def keyboard(settings: Settings, now: dict) -> InlineKeyboardMarkup:
    kb = InlineKeyboardBuilder()
    for t in TEMPERATURES:
        mark = "✅ " if t == now["temperature"] else ""
        kb.button(
            text=f"{mark}🌡 {t:g}", callback_data=SettingPick(name="temperature", value=str(t))
        )
    for n in lengths(settings):
        mark = "✅ " if n == now["tokens"] else ""
        kb.button(
            text=f"{mark}📏 {n}", callback_data=SettingPick(name="max_new_tokens", value=str(n))
        )
    kb.button(text="↩️ defaults", callback_data=SettingPick(name="reset", value=""))
    kb.adjust(len(TEMPERATURES), len(lengths(settings)), 1)
    return kb.as_markup()


def apply(settings: Settings, store: Store, user_id: int, name: str, value: str) -> bool:
    """Validate and store one change; False when the name or value is not allowed."""
    if name == "reset":
        store.clear_prefs(user_id, "temperature", "max_new_tokens")
        return True
    try:
        if name == "temperature":
            t = float(value)
            if not (math.isfinite(t) and 0 <= t <= MAX_TEMPERATURE):
                return False
            store.set_prefs(user_id, temperature=t)
            return True
        if name == "max_new_tokens":
            n = int(value)
            if not 1 <= n <= settings.max_reply_tokens:
                return False
            store.set_prefs(user_id, max_new_tokens=n)
            return True
    except ValueError:
        return False
    return False


async def show(message: Message, command: CommandObject, settings: Settings, store: Store) -> None:
    user_id = message.from_user.id
    args = (command.args or "").split()
    if args:
        name = "reset" if args == ["reset"] else NAMES.get(args[0].lower())
        value = args[1] if len(args) == 2 else ""
        if name is None or (name != "reset" and len(args) != 2):
            ok = False
        else:
            ok = apply(settings, store, user_id, name, value)
        if not ok:
            usage = texts.SETTINGS_USAGE.format(
                max_temperature=MAX_TEMPERATURE, max_tokens=settings.max_reply_tokens
            )
            await message.reply(usage)
            return
        await message.reply(texts.SETTINGS_SAVED.format(**current(settings, store, user_id)))
        return
    now = current(settings, store, user_id)
    await message.reply(texts.SETTINGS_MENU.format(**now), reply_markup=keyboard(settings, now))


async def pick(
    query: CallbackQuery, callback_data: SettingPick, settings: Settings, store: Store
) -> None:
    user_id = query.from_user.id
    if not apply(settings, store, user_id, callback_data.name, callback_data.value):
        await query.answer(texts.BAD_VALUE, show_alert=True)
        return
    now = current(settings, store, user_id)
    await query.answer(texts.SETTINGS_SAVED.format(**now))
    await edit_menu(query, texts.SETTINGS_MENU.format(**now), keyboard(settings, now))


def router() -> Router:
    r = Router(name="settings")
    r.message.register(show, Command("settings"))
    r.callback_query.register(pick, SettingPick.filter())
    return r
