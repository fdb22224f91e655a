"""End to end: the real aiogram bot polls the fake Telegram server and answers with the tiny
exported llama. Each test drives one conversation and reads what the users would see."""

from __future__ import annotations

import json
import shutil
import threading

import pytest

from bot import texts
from bot.handlers.commands import COMMANDS
from tests.bot.conftest import ManualClock, bot_running, settled
from tests.fakes.telegram import BOT_USER, FakeTelegram

OLD_MENU = {  # a bot message from long ago, with buttons that no longer mean anything
    "message_id": 1,
    "date": 0,
    "chat": {"id": 70, "type": "private"},
    "from": BOT_USER,
    "text": "an old menu",
}


def user_texts(generation) -> list[str]:
    return [m["content"] for m in generation.messages if m["role"] == "user"]


def buttons(message: dict) -> list[tuple[str, str]]:
    rows = message["reply_markup"]["inline_keyboard"]
    return [(b["text"], b["callback_data"]) for row in rows for b in row]


async def test_commands_are_registered_and_answered(artifacts, tmp_path, loader):
    async with bot_running(artifacts, tmp_path / "db", load=loader) as (tg, app):
        assert [c["command"] for c in tg.commands] == list(COMMANDS)
        tg.user_says(1, "/start")
        tg.user_says(1, "/help")
        await settled(tg, app)
        start, help_ = (m["text"] for m in tg.bot_messages(1))
    assert start == texts.START.format(name="User1")
    assert "/retry — answer my last message again" in help_ and "/reload" not in help_
    assert app.health.errors == []


async def test_a_message_gets_a_streamed_reply_with_the_chat_as_context(
    artifacts, tmp_path, loader
):
    # the bot's clock moves only when the pacer waits: the reply's first words go out at
    # once, the rest as one paced edit, and the gaps between sends are exact
    clock = ManualClock()
    async with (
        FakeTelegram(clock=clock.time) as tg,
        bot_running(artifacts, tmp_path / "db", load=loader, tg=tg, clock=clock) as (_, app),
    ):
        first = tg.user_says(1, "Hello there")
        await settled(tg, app)
        second = tg.user_says(1, "And again")
        await settled(tg, app)
        history = app.store.history(1)

    (reply1,) = tg.replies_to(first)
    (reply2,) = tg.replies_to(second)
    assert [m["role"] for m in history] == ["user", "assistant"] * 2
    assert [m["content"] for m in history] == ["Hello there", reply1, "And again", reply2]
    # streamed: typing, one message with the first words, then an edit to the whole reply,
    # every send or edit edit_interval (0.05 s) after the one before
    chat = [c for c in tg.calls if c.params.get("chat_id") == 1]
    assert chat[0].method == "sendChatAction"
    shown = [c for c in chat if c.method in ("sendMessage", "editMessageText")]
    assert [c.method for c in shown] == ["sendMessage", "editMessageText"] * 2
    assert reply1.startswith(shown[0].params["text"]) and shown[0].params["text"] != reply1
    assert [c.params["text"] for c in shown[1::2]] == [reply1, reply2]
    assert [c.at for c in shown] == pytest.approx([0, 0.05, 0.1, 0.15])
    # the second prompt carries the first exchange
    assert loader.generations[1].messages == history[:3]
    assert app.health.errors == []


async def test_model_choice_is_per_user(artifacts, tmp_path, loader):
    async with bot_running(artifacts, tmp_path / "db", load=loader) as (tg, app):
        tg.user_says(1, "/model")
        await settled(tg, app)
        (menu,) = tg.bot_messages(1)
        labels = [text for text, _ in buttons(menu)]
        assert labels[0].startswith("✅ llama · gguf-q4_k_m") and "llama · onnx" in labels[1]
        tg.press(1, menu, buttons(menu)[1][1])
        await settled(tg, app)
        assert buttons(tg.bot_messages(1)[0])[1][0].startswith("✅ llama · onnx")
        assert tg.called("answerCallbackQuery")
        tg.user_says(1, "from one")
        tg.user_says(2, "from two")
        await settled(tg, app)
        prefs = app.store.prefs(1), app.store.prefs(2)
    used = {user_texts(g)[-1]: g.format for g in loader.generations}
    assert used == {"from one": "onnx", "from two": "gguf-q4_k_m"}
    assert (prefs[0].artifact, prefs[0].format) == ("llama", "onnx")
    assert prefs[1].format is None
    assert app.health.errors == []


async def test_settings_by_keyboard_and_by_arguments(artifacts, tmp_path, loader):
    async with bot_running(artifacts, tmp_path / "db", load=loader) as (tg, app):
        tg.user_says(1, "/settings")
        await settled(tg, app)
        (menu,) = tg.bot_messages(1)
        assert "temperature 0 " in menu["text"] and "reply length 8 tokens" in menu["text"]
        data = dict((text.removeprefix("✅ "), cb) for text, cb in buttons(menu))
        assert {"📏 4", "📏 8", "📏 16", "🌡 1", "↩️ defaults"} <= set(data)
        tg.press(1, menu, data["🌡 1"])
        await settled(tg, app)
        assert "temperature 1 " in tg.bot_messages(1)[0]["text"]
        length = tg.user_says(1, "/settings length 4")
        await settled(tg, app)
        assert tg.replies_to(length) == [texts.SETTINGS_SAVED.format(temperature=1, tokens=4)]
        tg.user_says(1, "hi")
        await settled(tg, app)
        config = loader.generations[-1].config
        assert (config.temperature, config.max_new_tokens) == (1.0, 4)
        bad = [
            tg.user_says(1, text)
            for text in (
                "/settings temperature hot",
                "/settings temperature 99",
                "/settings temperature nan",
                "/settings length 0",
                "/settings length 17",
                "/settings colour red",
                "/settings temperature",
            )
        ]
        forged = tg.press(1, menu, "set:temperature:-3")
        reset = tg.user_says(1, "/settings reset")
        await settled(tg, app)
        prefs = app.store.prefs(1)
    usage = texts.SETTINGS_USAGE.format(max_temperature=5, max_tokens=16)
    assert all(tg.replies_to(m) == [usage] for m in bad)
    (alert,) = tg.called("answerCallbackQuery", callback_query_id=forged)
    assert alert.params["text"] == texts.BAD_VALUE and alert.params["show_alert"] is True
    assert tg.replies_to(reset) == [texts.SETTINGS_SAVED.format(temperature=0, tokens=8)]
    assert prefs.temperature is None and prefs.max_new_tokens is None
    assert app.health.errors == []


async def test_retry_regenerates_the_last_answer(artifacts, tmp_path, loader):
    async with bot_running(artifacts, tmp_path / "db", load=loader) as (tg, app):
        nothing = tg.user_says(1, "/retry")
        await settled(tg, app)
        tg.user_says(1, "Tell me a joke")
        await settled(tg, app)
        app.store.set_prefs(1, temperature=1.5)  # a different answer, most likely
        again = tg.user_says(1, "/retry")
        await settled(tg, app)
        history = app.store.history(1)
    assert tg.replies_to(nothing) == [texts.NOTHING_TO_RETRY]
    assert [user_texts(g) for g in loader.generations] == [["Tell me a joke"]] * 2
    assert [m["content"] for m in history] == ["Tell me a joke", tg.replies_to(again)[0]]
    assert app.health.errors == []


async def test_stop_cancels_the_running_generation(artifacts, tmp_path, make_loader):
    loader = make_loader(hold=threading.Event())  # never released: only /stop ends it
    async with bot_running(
        artifacts, tmp_path / "db", load=loader, max_new_tokens=16, edit_interval=0.1
    ) as (tg, app):
        story = tg.user_says(1, "Tell me a long story")
        await tg.wait_for(lambda: tg.replies_to(story))  # the reply has started
        stop = tg.user_says(1, "/stop")
        await settled(tg, app)
        again = tg.user_says(1, "/stop")
        await settled(tg, app)
        history = app.store.history(1)
    (reply,) = tg.replies_to(story)
    assert reply.endswith("\n\n" + texts.STOPPED)
    assert tg.replies_to(stop) == [texts.STOPPING]
    assert tg.replies_to(again) == [texts.NOTHING_TO_STOP]
    assert history[1]["content"] == reply.removesuffix("\n\n" + texts.STOPPED)
    assert loader.cache[(str(artifacts), "llama", "gguf-q4_k_m")].last_stats.stopped_by == "cancel"
    assert app.health.errors == []


async def test_one_reply_per_user_a_bounded_queue_and_the_position(
    artifacts, tmp_path, make_loader
):
    gate = threading.Event()
    loader = make_loader(gate=gate)  # every generation waits for the gate
    async with bot_running(artifacts, tmp_path / "db", load=loader, queue_size=1) as (tg, app):
        running = tg.user_says(1, "first")
        await tg.wait_for(lambda: loader.generations)  # in the model, held by the gate
        again = tg.user_says(1, "second, too soon")
        waiting = tg.user_says(2, "I wait")
        await tg.wait_for(lambda: tg.replies_to(waiting))
        full = tg.user_says(3, "no room")
        await tg.wait_for(lambda: tg.replies_to(full))
        assert tg.replies_to(waiting) == [texts.IN_LINE.format(position=1)]
        assert tg.replies_to(again) == []  # not refused: it waits for its turn
        gate.set()
        await settled(tg, app)
        history, left = app.store.history(1), app.store.open_turns()
    assert tg.replies_to(full) == [texts.BUSY_QUEUE.format(waiting=1)]
    assert tg.replies_to(running) and tg.replies_to(waiting)[0] != texts.IN_LINE.format(position=1)
    (second,) = tg.replies_to(again)
    assert [m["content"] for m in history] == [
        "first",
        tg.replies_to(running)[0],
        "second, too soon",
        second,
    ]
    assert [user_texts(g)[-1] for g in loader.generations] == [
        "first",
        "I wait",
        "second, too soon",
    ]
    assert left == [] and app.health.errors == []


async def test_messages_sent_while_answering_are_merged_into_one_turn(
    artifacts, tmp_path, make_loader
):
    gate = threading.Event()
    loader = make_loader(gate=gate)
    async with bot_running(artifacts, tmp_path / "db", load=loader) as (tg, app):
        first = tg.user_says(1, "Hi")
        await tg.wait_for(lambda: loader.generations)
        more = [tg.user_says(1, text) for text in ("I have a question.", "", "What is 2+2?")]
        await tg.wait_for(lambda: len(app.store.open_turns()) == 4)  # stored when accepted
        stop = tg.user_says(1, "/stop")  # commands act at once
        await tg.wait_for(lambda: tg.replies_to(stop))
        gate.set()
        await settled(tg, app)
        history, left = app.store.history(1), app.store.open_turns()
    assert tg.replies_to(stop) == [texts.STOPPING]
    assert tg.replies_to(first)[0].endswith(texts.STOPPED)
    assert [user_texts(g)[-1] for g in loader.generations] == [
        "Hi",
        "I have a question.\nWhat is 2+2?",  # in order, one turn
    ]
    # one reply, to the newest message; the others are answered by it
    assert tg.replies_to(more[0]) == tg.replies_to(more[1]) == []
    (reply,) = tg.replies_to(more[2])
    assert history[-2:] == [
        {"role": "user", "content": "I have a question.\nWhat is 2+2?"},
        {"role": "assistant", "content": reply},
    ]
    assert left == [] and app.health.errors == []


async def test_a_burst_of_a_hundred_messages_is_merged_capped_and_explained(
    artifacts, tmp_path, make_loader
):
    gate = threading.Event()
    loader = make_loader(gate=gate)
    async with bot_running(
        artifacts, tmp_path / "db", load=loader, rate_limit=20, max_input_chars=100
    ) as (tg, app):
        burst = [tg.user_says(1, f"message number {i:03}") for i in range(100)]
        await tg.wait_for(lambda: loader.generations and not tg.updates)
        await tg.wait_for(lambda: len(app.store.open_turns()) == 20)
        gate.set()
        await settled(tg, app)
        history = app.store.history(1)
    assert [len(user_texts(g)[-1]) for g in loader.generations] == [18, 100]
    merged = "\n".join(m["text"] for m in burst[1:20])
    assert user_texts(loader.generations[1])[-1] == merged[:100]
    # the 21st message is told to slow down; the rest of the burst is not answered
    assert tg.replies_to(burst[20])[0].startswith("🐢 Slow down: at most 20 messages per 60 s")
    assert all(tg.replies_to(m) == [] for m in burst[1:19] + burst[21:])
    note, reply = tg.replies_to(burst[19])
    assert note == texts.TRUNCATED.format(kept=100, total=len(merged))
    assert [m["content"] for m in history] == [
        "message number 000",
        tg.replies_to(burst[0])[0],
        merged[:100],
        reply,
    ]
    assert app.health.errors == []


async def test_groups_answer_only_mentions_and_replies(artifacts, tmp_path, loader):
    group = {"chat_id": -100, "chat_type": "supergroup"}
    async with bot_running(artifacts, tmp_path / "db", load=loader) as (tg, app):
        chatter = tg.user_says(1, "just chatting with friends", **group)
        sticker = tg.user_sends(1, "sticker", **group)
        other_bot = tg.user_says(1, "/help@other_bot", **group)
        mention = tg.user_says(1, "@Balabol_Test_Bot hello bot", **group)
        await settled(tg, app)
        (answer,) = tg.bot_messages(-100)
        follow_up = tg.user_says(2, "and you?", reply_to=answer, **group)
        unknown = tg.user_says(2, "/foo@balabol_test_bot", **group)
        help_ = tg.user_says(2, "/help", **group)
        await settled(tg, app)
        history = app.store.history(-100)
    for m in (chatter, sticker, other_bot):
        assert tg.replies_to(m) == []
    assert tg.replies_to(mention) and tg.replies_to(follow_up)
    assert tg.replies_to(unknown) == [texts.UNKNOWN_COMMAND.format(command="/foo")]
    assert any(m["text"].startswith("Write to me") for m in tg.bot_messages(-100))
    assert [m["content"] for m in history if m["role"] == "user"] == ["hello bot", "and you?"]
    assert help_ is not None and app.health.errors == []


async def test_non_text_messages_get_a_polite_note(artifacts, tmp_path, loader):
    async with bot_running(artifacts, tmp_path / "db", load=loader) as (tg, app):
        sent = [
            tg.user_sends(1, kind) for kind in ("sticker", "photo", "voice", "document", "location")
        ]
        await settled(tg, app)
    assert all(tg.replies_to(m) == [texts.NOT_TEXT] for m in sent)
    assert not loader.generations and app.health.errors == []


async def test_bad_input_is_answered_clearly(artifacts, tmp_path, loader):
    odd = [
        "Z̷̢̛a̶̡l̸̨g̵o̴ ̷t̶e̸x̵t̷",
        "👩‍👩‍👧‍👦🏳️‍🌈🇺🇦 \u200d\u200b",
        "\u202eRTL override\u202c and عربى",
        "nul \x00 and bell \x07",
        "𝕳𝖊𝖑𝖑𝖔 \U0010ffff \ufeff",
    ]
    async with bot_running(artifacts, tmp_path / "db", load=loader, max_input_chars=4000) as (
        tg,
        app,
    ):
        empty = tg.user_says(1, "")
        blank = tg.user_says(2, "   \n\t ")
        huge = tg.user_says(3, "word " * 20_000)  # 100 000 characters
        weird = [tg.user_says(10 + i, text) for i, text in enumerate(odd)]
        unknown = tg.user_says(4, "/frobnicate now")
        slash = tg.user_says(5, "/")
        tg.user_says(6, "/start@balabol_test_bot with args")
        stale = tg.press(7, OLD_MENU, "no-such-button")
        gone = tg.press(8, OLD_MENU, "model:000000000000")
        await settled(tg, app, timeout=40)
        history = {m["message_id"]: app.store.history(m["chat"]["id"]) for m in [huge, *weird]}
    assert tg.replies_to(empty) == [texts.EMPTY] and tg.replies_to(blank) == [texts.EMPTY]
    note, reply = tg.replies_to(huge)
    assert note.startswith("✂️ Your message") and "100000 characters" in note and reply
    stored = history[huge["message_id"]][0]["content"]
    assert 0 < len(stored) < 4000 and ("word " * 20_000).startswith(stored)
    for m in weird:
        assert tg.replies_to(m) and history[m["message_id"]][0]["content"] == m["text"]
    assert tg.replies_to(unknown) == [texts.UNKNOWN_COMMAND.format(command="/frobnicate")]
    assert tg.replies_to(slash) == [texts.UNKNOWN_COMMAND.format(command="/")]
    assert tg.bot_messages(6)[0]["text"] == texts.START.format(name="User6")
    assert tg.called("answerCallbackQuery", callback_query_id=stale)
    (alert,) = tg.called("answerCallbackQuery", callback_query_id=gone)
    assert alert.params["text"] == texts.MODEL_GONE
    assert app.health.errors == []


async def test_rate_limit_per_user(artifacts, tmp_path, loader):
    async with bot_running(artifacts, tmp_path / "db", load=loader, rate_limit=2) as (tg, app):
        sent = [tg.user_says(1, "/help") for _ in range(4)]
        other = tg.user_says(2, "/help")
        await settled(tg, app)
    answers = [m["text"] for m in tg.bot_messages(1)]
    assert len(answers) == 3 and answers[2].startswith("🐢 Slow down: at most 2 messages per 60 s")
    assert tg.replies_to(sent[2]) == [answers[2]] and tg.replies_to(sent[3]) == []
    assert tg.bot_messages(2) and other is not None


async def test_allow_list_admins_and_hot_reload(artifacts, tmp_path, loader):
    root = tmp_path / "artifacts"
    shutil.copytree(artifacts / "llama", root / "llama")
    async with bot_running(root, tmp_path / "db", load=loader, allowed_users=[1], admins=[9]) as (
        tg,
        app,
    ):
        stranger = tg.user_says(2, "hi")
        tg.user_says(1, "/model")
        await settled(tg, app)
        menu = tg.bot_messages(1)[0]
        tapped = tg.press(2, menu, buttons(menu)[1][1])
        tg.press(1, menu, buttons(menu)[1][1])  # user 1 picks onnx
        not_admin = tg.user_says(1, "/reload")
        no_change = tg.user_says(9, "/reload")
        await settled(tg, app)
        old = app.models.loaded()[0].backend
        # a new export: onnx now failed its gate, the q4_k_m file was replaced
        manifest_path = root / "llama" / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        for a in manifest["artifacts"]:
            if a["format"] == "onnx":
                a["status"] = "failed"
            if a["format"] == "gguf-q4_k_m":
                a["sha256"] = "0" * 64
        manifest_path.write_text(json.dumps(manifest))
        swapped = tg.user_says(9, "/reload")
        await settled(tg, app)
        tg.user_says(1, "which model now?")
        await settled(tg, app)
        new = next(m for m in app.models.loaded() if m.choice.format == "gguf-q4_k_m").backend
    assert tg.replies_to(stranger) == [texts.NOT_ALLOWED.format(user_id=2)]
    (alert,) = tg.called("answerCallbackQuery", callback_query_id=tapped)
    assert alert.params["text"] == texts.NOT_ALLOWED.format(user_id=2)
    assert tg.replies_to(not_admin) == [texts.ADMINS_ONLY]
    assert tg.replies_to(no_change) == [texts.RELOADED.format(choices=2, details="no change")]
    assert tg.replies_to(swapped) == [
        texts.RELOADED.format(choices=1, details="gone: llama/onnx, swapped: llama/gguf-q4_k_m")
    ]
    assert new is not old
    assert loader.generations[-1].format == "gguf-q4_k_m"  # user 1's onnx is gone: the default
    assert app.health.errors == []


async def test_persona_and_system_prompt_lead_every_prompt(artifacts, tmp_path, loader):
    persona = tmp_path / "persona.json"
    persona.write_text(json.dumps({"system": "You are Masha.", "examples": [["hi", "hey!"]]}))
    async with bot_running(artifacts, tmp_path / "db", load=loader, persona=persona) as (tg, app):
        tg.user_says(1, "who are you?")
        await settled(tg, app)
    assert loader.generations[0].messages == [
        {"role": "system", "content": "You are Masha."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hey!"},
        {"role": "user", "content": "who are you?"},
    ]


async def test_a_button_under_a_gone_menu_sends_the_menu_anew(artifacts, tmp_path, loader):
    async with bot_running(artifacts, tmp_path / "db", load=loader) as (tg, app):
        tg.user_says(1, "/settings")
        tg.user_says(1, "/model")
        await settled(tg, app)
        settings_menu, model_menu = tg.bot_messages(1)
        del tg.messages[1][settings_menu["message_id"]]  # the user deleted it
        tg.messages[1][model_menu["message_id"]]["too_old"] = True  # can't be edited
        deleted = tg.press(1, settings_menu, dict(buttons(settings_menu))["🌡 1"])
        old = tg.press(1, model_menu, buttons(model_menu)[1][1])
        await settled(tg, app)
        menus = tg.bot_messages(1)[1:]
    assert tg.called("answerCallbackQuery", callback_query_id=deleted)
    assert tg.called("answerCallbackQuery", callback_query_id=old)
    assert [m["text"].split("\n")[0] for m in menus] == [
        texts.SETTINGS_MENU.format(temperature=1, tokens=8).split("\n")[0],
        "Your model: " + buttons(model_menu)[1][0],
    ]
    assert all(m["reply_markup"] for m in menus)
    assert app.health.errors == []


async def test_the_least_recently_used_model_is_unloaded(artifacts, tmp_path, loader):
    async with bot_running(artifacts, tmp_path / "db", load=loader, max_loaded=1) as (tg, app):
        tg.user_says(1, "/model")
        await settled(tg, app)
        menu = tg.bot_messages(1)[0]
        tg.press(1, menu, buttons(menu)[1][1])  # onnx: loaded, gguf unloaded
        await settled(tg, app)
        assert [m.choice.format for m in app.models.loaded()] == ["onnx"]
        tg.user_says(2, "back to the default")
        await settled(tg, app)
        assert [m.choice.format for m in app.models.loaded()] == ["gguf-q4_k_m"]
    assert loader.loads == ["gguf-q4_k_m", "onnx", "gguf-q4_k_m"]
    assert app.health.errors == []


async def test_a_broken_model_or_a_blocked_bot_is_contained(artifacts, tmp_path, make_loader):
    loader = make_loader(fail_after=2)
    async with bot_running(artifacts, tmp_path / "db", load=loader) as (tg, app):
        broken = tg.user_says(1, "Hello")
        tg.blocked.add(2)
        tg.user_says(2, "Hello")
        await settled(tg, app)
        histories = app.store.history(1), app.store.history(2)
    (reply,) = tg.replies_to(broken)
    assert reply.endswith("\n\n" + texts.FAILED)
    assert histories[0][1]["content"] == reply.removesuffix("\n\n" + texts.FAILED)
    assert histories[1][0]["content"] == "Hello" and tg.bot_messages(2) == []
    assert app.health.errors == []  # both handled where they happen, not as crashes
