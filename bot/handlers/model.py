"""/model: an inline keyboard of the models that passed their parity gate; the choice is
per user and stored.

Example: `/model`, then tap "llama · onnx-int8 · 1 MB".
"""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from balabol.errors import BalabolError
from bot import texts
from bot.handlers.common import edit_menu
from bot.models import Choice, ModelPool
from bot.storage import Store


class ModelPick(CallbackData, prefix="model"):
    key: str  # Choice.key: short, whatever the artifact's name


def keyboard(models: ModelPool, current: Choice) -> InlineKeyboardMarkup:
    kb = InlineKeyboardBuilder()
    for c in models.choices:
        mark = "✅ " if c == current else ""
        kb.button(text=mark + c.label, callback_data=ModelPick(key=c.key))
    kb.adjust(1)
    return kb.as_markup()


async def show(message: Message, models: ModelPool, store: Store) -> None:
    prefs = store.prefs(message.from_user.id)
    current = models.resolve(prefs.artifact, prefs.format)
    await message.reply(
        texts.MODEL_MENU.format(current=current.label), reply_markup=keyboard(models, current)
    )


async def pick(
    query: CallbackQuery, callback_data: ModelPick, models: ModelPool, store: Store
) -> None:
    choice = models.by_key(callback_data.key)
    if choice is None:
        await query.answer(texts.MODEL_GONE, show_alert=True)
        return
    store.set_prefs(query.from_user.id, artifact=choice.artifact, format=choice.format)
    await query.answer(texts.MODEL_CHOSEN.format(model=choice.label))
    await edit_menu(query, texts.MODEL_MENU.format(current=choice.label), keyboard(models, choice))
    try:  # load it now, so the first reply does not wait (and a broken file shows here)
        await models.get(choice)
    except BalabolError as e:
        if isinstance(query.message, Message):
            await query.message.answer(texts.MODEL_UNAVAILABLE.format(model=choice.label, error=e))


def router() -> Router:
    r = Router(name="model")
    r.message.register(show, Command("model"))
    r.callback_query.register(pick, ModelPick.filter())
    return r
