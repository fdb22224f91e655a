"""The bot under a crowd: 50 users send 3 messages each within one second.

The real bot (aiogram, polling) and the real exported model answer through the fake Bot
API server (tests/fakes/telegram.py), which answers 429 as Telegram does past its send
limits (1 a second per chat, 30 a second overall). Reported: messages answered, merged
into a later turn, refused (queue full); time from a user's message to the first and to
the final text of its reply (p50/p95); 429s the bot ran into. Not part of CI.

    python -m pytest benchmarks/test_bot_load.py -s --artifacts-dir /work/main/artifacts \
        --artifact smollm2-135m-instruct
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from bot import texts
from bot.app import App
from bot.config import load_settings
from tests.fakes.telegram import FakeTelegram, Limits

USERS, MESSAGES, WITHIN = 50, 3, 1.0  # seconds over which all messages are sent
FORMAT = "gguf-q4_k_m"
SETTLE = 1800  # seconds the bot gets to answer everyone before the run counts as failed
REFUSAL = texts.BUSY_QUEUE.split("{")[0]
IN_LINE = texts.IN_LINE.split("{")[0]


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def crowd(root: Path, artifact: str, db: Path) -> dict:
    tg = await FakeTelegram(limits=Limits()).start()
    settings = load_settings(
        None,
        bot_token=tg.token,
        api_base=tg.url,
        artifacts=root,
        db=db,
        artifact=artifact,
        format=FORMAT,
        formats=[FORMAT],
    )
    app = App(settings)
    task = asyncio.create_task(app.run(handle_signals=False))
    try:
        await tg.wait_for(lambda: tg.polls, 120, also=task)
        sent: list[tuple[dict, float]] = []  # (message, when it was sent)
        for i in range(MESSAGES):
            for user in range(1, USERS + 1):
                sent.append((tg.user_says(user, f"Hi, I'm user {user}. Question {i + 1}?"), 0))
                sent[-1] = (sent[-1][0], time.monotonic())
                await asyncio.sleep(WITHIN / (USERS * MESSAGES))
        await tg.wait_for(
            lambda: not tg.updates and not app.dp._handle_update_tasks and not app.replies.active,
            SETTLE,
            also=task,
        )
    finally:
        if not task.done():
            await app.stop()
        await task
        await tg.close()
    return measure(tg, sent)


def measure(tg: FakeTelegram, sent: list[tuple[dict, float]]) -> dict:
    answered = merged = refused = 0
    first, final, users_answered = [], [], set()
    for user in range(1, USERS + 1):
        covered = []
        for msg, at in [(m, t) for m, t in sent if m["chat"]["id"] == user]:
            covered.append(msg)
            bot_msgs = [
                m
                for m in tg.bot_messages(user)
                if m.get("reply_to_message", {}).get("message_id") == msg["message_id"]
            ]
            if not bot_msgs:
                continue  # merged into a later message's turn
            text = bot_msgs[-1]["text"]
            if text.startswith(REFUSAL):
                refused += len(covered)
            else:
                answered += 1
                merged += len(covered) - 1
                users_answered.add(user)
                times = shown_at(tg, user, bot_msgs[-1]["message_id"])
                if times:
                    first.append(times[0] - at)
                    final.append(times[-1] - at)
            covered = []
        refused += len(covered)  # never answered: counted as refused, and shown below
    stats = {
        "users": USERS,
        "messages": USERS * MESSAGES,
        "users_answered": len(users_answered),
        "answered": answered,
        "merged": merged,
        "refused_queue_full": refused,
        "http_429": sum(c.status == 429 for c in tg.calls),
        "sends": sum(c.method in ("sendMessage", "editMessageText") for c in tg.calls),
    }
    for name, values in (("first_reply", first), ("final_reply", final)):
        for p in (50, 95):
            v = pct(values, p)
            stats[f"{name}_p{p}_s"] = None if v is None else round(v, 2)
    return stats


def shown_at(tg: FakeTelegram, chat_id: int, message_id: int) -> list[float]:
    """When the reply's text (not a place in line) was sent or edited into the message."""
    out = []
    for c in tg.calls:
        if c.status != 200 or c.params.get("chat_id") != chat_id:
            continue
        mine = (c.method == "sendMessage" and (c.result or {}).get("message_id") == message_id) or (
            c.method == "editMessageText" and c.params.get("message_id") == message_id
        )
        if mine and not str(c.params.get("text", "")).startswith(IN_LINE):
            out.append(c.at)
    return out


def test_fifty_users_three_messages_each(bench, tmp_path):
    manifest = bench["manifest"]
    if not any(a.format == FORMAT and a.status == "passed" for a in manifest.artifacts):
        pytest.skip(f"{manifest.name} has no passed {FORMAT} (an LSTM has no GGUF)")
    stats = asyncio.run(crowd(bench["root"], manifest.name, tmp_path / "bot.sqlite3"))
    print("\nbot under a crowd:", json.dumps(stats, indent=1))
    assert stats["answered"] + stats["merged"] + stats["refused_queue_full"] == USERS * MESSAGES
