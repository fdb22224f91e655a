"""Load and flood control: 50 users at once, and Telegram answering 429."""

from __future__ import annotations

from bot import texts
from tests.bot.conftest import ManualClock, bot_running, settled

REFUSALS = (texts.BUSY_USER, texts.BUSY_QUEUE.split("{")[0])


async def test_fifty_users_three_messages_each_at_once(artifacts, tmp_path, loader):
    async with bot_running(artifacts, tmp_path / "db", load=loader, queue_size=16) as (tg, app):
        sent = [
            tg.user_says(user, f"message {i} from {user}")
            for i in range(3)
            for user in range(1, 51)
        ]
        await settled(tg, app, timeout=50)
        histories = {user: app.store.history(user) for user in range(1, 51)}

    answered = refused = 0
    for m in sent:
        replies = tg.replies_to(m)
        assert len(replies) == 1, (m["text"], replies)  # every message: exactly one answer
        if replies[0].startswith(REFUSALS):
            refused += 1
            continue
        answered += 1
        exchange = [
            {"role": "user", "content": m["text"]},
            {"role": "assistant", "content": replies[0]},
        ]
        history = histories[m["chat"]["id"]]
        assert any(history[i : i + 2] == exchange for i in range(len(history))), m["text"]
    # the first message of every user that found room in the queue is answered
    assert answered >= 16 and answered + refused == 150
    assert sum(len(h) for h in histories.values()) == 2 * answered  # no more, no less
    assert app.health.errors == []


async def test_flood_control_the_bot_waits_and_delivers(artifacts, tmp_path, loader):
    clock = ManualClock()  # the bot's waits are recorded, not slept
    async with bot_running(artifacts, tmp_path / "db", load=loader, clock=clock) as (tg, app):
        tg.flood(2, retry_after=7)
        msg = tg.user_says(1, "Hello")
        await settled(tg, app)
        history = app.store.history(1)
    assert [c.status for c in tg.calls if c.method == "sendMessage"] == [429, 429, 200]
    assert clock.sleeps.count(7) == 2  # retry_after, before each new attempt
    assert tg.replies_to(msg) == [history[1]["content"]]
    assert app.health.errors == []
