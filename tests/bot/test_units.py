"""Units of the bot without a model: settings, storage, splitting, pacing, flood control."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.methods import SendMessage

from balabol.errors import ConfigError
from bot.config import load_settings
from bot.gate import SendGate
from bot.middlewares.ratelimit import RateLimit
from bot.storage import Prefs, Store
from bot.streaming import MESSAGE_LIMIT, LiveMessage, split_message, stream
from tests.bot.conftest import ManualClock
from tests.conftest import made_up
from tests.fakes.telegram import TOKEN, FakeTelegram, Limits

# --- settings -------------------------------------------------------------------------------


def test_settings_from_env_and_dotenv(tmp_path, monkeypatch):
    env = tmp_path / ".env"
    env.write_text("BALABOL_BOT_TOKEN=42:from-dotenv\nBALABOL_TEMPERATURE=0.3\n")
    monkeypatch.setenv("BALABOL_ALLOWED_USERS", "1, 2 3")
    monkeypatch.setenv("BALABOL_ADMINS", "7")
    monkeypatch.setenv("BALABOL_FORMATS", "onnx,gguf-q8_0")
    s = load_settings(env)
    assert s.token == "42:from-dotenv" and s.temperature == 0.3
    assert s.allowed_users == [1, 2, 3] and s.admins == [7]
    assert s.formats == ["onnx", "gguf-q8_0"]
    assert "from-dotenv" not in repr(s) and "from-dotenv" not in str(s.model_dump())


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "BALABOL_BOT_TOKEN is not set: get a token from @BotFather"),
        ({"bot_token": "not a token"}, "BALABOL_BOT_TOKEN does not look like a bot token"),
        ({"bot_token": TOKEN, "temperature": 9}, "BALABOL_TEMPERATURE"),
        ({"bot_token": TOKEN, "max_new_tokens": 600}, "exceeds max_reply_tokens"),
        ({"bot_token": TOKEN, "mode": "webhook"}, "needs BALABOL_WEBHOOK_URL"),
    ],
)
def test_bad_settings_name_the_variable(values, message, monkeypatch, tmp_path):
    monkeypatch.delenv("BALABOL_BOT_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=message) as e:
        load_settings(None, **values)
    assert "not a token" not in str(e.value)  # a mistyped token is never echoed


# --- storage --------------------------------------------------------------------------------


def test_history_is_bounded_per_chat_and_survives_reopening(tmp_path):
    store = Store(tmp_path / "db.sqlite3", history_limit=4)
    for i in range(3):
        store.add_exchange(1, f"q{i}", f"a{i}")
    store.add_exchange(2, "other chat", None)
    assert store.history(1) == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
    ]
    assert store.last_exchange(1) == ("q2", "a2")
    assert store.last_exchange(2) == ("other chat", None)
    store.add_exchange(1, "q2", "better a2", replace_last=True)
    store.set_prefs(5, temperature=0.2, artifact="llama", format="onnx")
    store.close()

    store = Store(tmp_path / "db.sqlite3", history_limit=4)
    assert [m["content"] for m in store.history(1)] == ["q1", "a1", "q2", "better a2"]
    assert store.prefs(5) == Prefs(temperature=0.2, artifact="llama", format="onnx")
    assert store.prefs(6) == Prefs()
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.reset(1) == 4 and store.history(1) == []
    with pytest.raises(ValueError, match="unknown preference"):
        store.set_prefs(5, colour="red")


# --- splitting, pacing, rate limit -----------------------------------------------------------


def test_split_prefers_paragraphs_then_sentences_then_words():
    para = "word " * 600  # 3000 characters
    chunks = split_message(para.strip() + "\n\n" + para.strip())
    assert chunks == [para.strip(), para.strip()]
    sentences = ("This is a sentence. " * 300).strip()  # 6000 characters
    chunks = split_message(sentences)
    assert all(len(c) <= MESSAGE_LIMIT for c in chunks) and chunks[0].endswith(".")
    assert " ".join(chunks) == sentences
    words = ("abc " * 2000).strip()
    assert all(c.endswith("abc") for c in split_message(words))
    blob = "x" * 10000  # no boundary at all: hard cuts
    assert [len(c) for c in split_message(blob)] == [4096, 4096, 1808]
    assert split_message("short") == ["short"]


async def test_gate_spaces_sends_per_chat_groups_and_overall():
    clock = ManualClock()
    gate, slots = SendGate(chat_interval=0.1, group_interval=0.3, rate=20, clock=clock), []

    async def send(chat_id):
        await gate.wait(chat_id)
        slots.append((chat_id, round(clock.now, 3)))

    await asyncio.gather(send(1), send(1), send(1), send(2), send(-5), send(-5))
    # chat 2 does not wait for chat 1, only for the global slot (1/20 s); a group waits
    # 0.3 s between its sends; within a chat the order is kept
    assert slots == [(1, 0.0), (2, 0.05), (1, 0.1), (-5, 0.15), (1, 0.2), (-5, 0.45)]
    clock.advance(0.5)  # 0.95: a slot after a pause is given at once
    await send(1)
    clock.advance(0.05)  # 1.0: too early, waits until 1.05
    await send(1)
    assert slots[6:] == [(1, 0.95), (1, 1.05)]


async def test_gate_keeps_a_flooded_chat_closed_and_the_others_open():
    clock = ManualClock()
    gate, slots = SendGate(chat_interval=0.1, rate=1000, clock=clock), []
    gate.close(1, 5)  # Telegram said 429, retry_after 5, for chat 1

    async def send(chat_id, paced=True):
        await gate.wait(chat_id, paced=paced)
        slots.append((chat_id, round(clock.now, 3)))

    await asyncio.gather(send(1), send(1, paced=False), send(2), send(2))
    assert slots == [(2, 0.0), (2, 0.1), (1, 5.0), (1, 5.0)]


async def test_stream_shows_the_growing_text_at_most_once_per_interval():
    clock = ManualClock()

    async def pieces():  # the model says a word every 0.03 s
        for piece in ["one", " two", " three", " four", " five", " six", " seven", " eight"]:
            clock.advance(0.03)
            yield piece

    async with FakeTelegram(clock=clock.time) as tg:
        user_msg = tg.user_says(1, "count")
        bot = fake_bot(tg, clock, interval=0.05)
        live = LiveMessage(bot, 1, reply_to=user_msg["message_id"])
        said = []
        await stream(live, pieces(), interval=0.05, said=said, clock=clock)
        await live.show("".join(said))  # the last words, as soon as the pacer allows
        await bot.session.close()
    shown = [(c.method, c.params["text"], round(c.at, 2)) for c in tg.calls if "text" in c.params]
    assert shown == [
        ("sendMessage", "one", 0.03),
        ("editMessageText", "one two three", 0.09),
        ("editMessageText", "one two three four five", 0.15),
        ("editMessageText", "one two three four five six seven", 0.21),
        ("editMessageText", "one two three four five six seven eight", 0.26),  # not 0.24
    ]
    assert clock.sleeps == pytest.approx([0.02])


async def test_rate_limit_warns_once_per_burst():
    now = [0.0]
    limit = RateLimit(2, 10, clock=lambda: now[0])
    seen, warned = [], []

    class User:
        id = 1

    class Event:
        async def reply(self, text):
            warned.append(text)

    async def handler(event, data):
        seen.append(now[0])

    for t in (0, 1, 2, 3, 11, 12):
        now[0] = t
        await limit(handler, Event(), {"event_from_user": User()})
    assert seen == [0, 1, 11, 12]
    assert len(warned) == 1 and "at most 2 messages per 10 s" in warned[0]


# --- delivery against the fake server ------------------------------------------------------


def fake_bot(tg: FakeTelegram, clock: ManualClock | None = None, interval: float = 0.0) -> Bot:
    """A Bot on the fake server whose gate paces only by `interval` (no global limit)."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(tg.url))
    gate = SendGate(chat_interval=interval, group_interval=interval, rate=math.inf, clock=clock)
    session.middleware(gate)
    return Bot(tg.token, session=session)


async def test_long_reply_continues_in_new_messages():
    async with FakeTelegram() as tg:
        user_msg = tg.user_says(1, "tell me everything")
        bot = fake_bot(tg)
        live = LiveMessage(
            bot,
            1,
            reply_to=user_msg["message_id"],
        )
        text = "\n\n".join(f"Paragraph {i}. " + ("blah " * 150).strip() for i in range(12))
        await live.show(text[:3000])
        await live.show(text)
        await bot.session.close()
        parts = tg.replies_to(user_msg)
        assert len(parts) == 3 and all(len(p) <= MESSAGE_LIMIT for p in parts)
        assert "\n\n".join(parts) == text
        assert all(p.startswith("Paragraph") for p in parts)
        assert [c.method for c in tg.calls] == ["sendMessage", "editMessageText"] + [
            "sendMessage"
        ] * 2


async def test_flood_control_waits_retry_after_and_delivers():
    async with FakeTelegram() as tg:
        user_msg = tg.user_says(1, "hi")
        clock = ManualClock()
        bot = fake_bot(tg, clock)
        live = LiveMessage(
            bot,
            1,
            reply_to=user_msg["message_id"],
        )
        tg.flood(2, retry_after=3)
        await live.show("hello")
        await live.show("hello there")
        await bot.session.close()
        assert clock.sleeps == [3, 3]  # two 429s, retry_after each
        assert tg.replies_to(user_msg) == ["hello there"]
        assert [(c.method, c.status) for c in tg.calls] == [
            ("sendMessage", 429),
            ("sendMessage", 429),
            ("sendMessage", 200),
            ("editMessageText", 200),
        ]


async def test_the_gate_keeps_to_telegrams_limits():
    # the gate's departures, checked by the fake server's accounting of Telegram's limits
    # (no HTTP in between: a virtual clock runs ahead of requests in flight)
    clock, tg, sent = ManualClock(), FakeTelegram(limits=Limits()), []
    gate = SendGate(clock=clock)  # Telegram's pacing: 1 s per chat, 3 s per group, 30/s

    async def make_request(bot, method):
        sent.append((method.chat_id, clock.now, tg._over_limits(method.chat_id, clock.now)))

    chats = [1, 1, 1, -5, -5, *range(100, 140)]
    await asyncio.gather(
        *(gate(make_request, None, SendMessage(chat_id=c, text="hello")) for c in chats)
    )
    assert [over for _, _, over in sent] == [0] * len(chats)  # Telegram would not say 429
    at = {chat: [t for c, t, _ in sent if c == chat] for chat in (1, -5)}
    gaps = {chat: [b - a for a, b in itertools.pairwise(times)] for chat, times in at.items()}
    assert min(gaps[1]) >= 1 and min(gaps[-5]) >= 3 and len(at[1]) == 3
    assert clock.now < 4  # nobody waited longer than the limits ask


# --- the default model ----------------------------------------------------------------------


def _write_manifest(root, name, speeds: dict, failed=()):
    (root / name).mkdir(parents=True)
    made_up(speeds, failed, name=name).save(root / name)


@pytest.mark.parametrize(
    ("speeds", "failed", "auto", "gguf"),
    [
        (
            {"onnx-int8": 90.0, "gguf-q8_0": 133.0, "gguf-q4_k_m": 124.0},
            (),
            "gguf-q8_0",
            "gguf-q8_0",
        ),
        ({"onnx-int8": 200.0, "gguf-q4_k_m": 124.0}, (), "onnx-int8", "gguf-q4_k_m"),
        ({"gguf-q4_0": 171.0, "gguf-q4_k_m": 124.0}, ("gguf-q4_0",), "gguf-q4_k_m", "gguf-q4_k_m"),
        (
            {"onnx-int8": None, "gguf-q8_0": None, "gguf-q4_k_m": None},
            (),
            "gguf-q4_k_m",
            "gguf-q4_k_m",
        ),
    ],
)
def test_the_default_is_the_fastest_passed_format_by_recorded_speed(
    tmp_path, speeds, failed, auto, gguf
):
    from bot.models import ModelPool

    _write_manifest(tmp_path, "m", speeds, failed)
    pool = ModelPool(tmp_path, artifact="m", fmt="auto", load=lambda *a, **k: None)
    assert (pool.default().format, pool.find("m", "gguf").format) == (auto, gguf)
    assert pool.find("m", "onnx") is None  # a format it does not have: no choice
