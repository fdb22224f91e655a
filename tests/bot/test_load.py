"""Load and flood control: 50 users at once, and Telegram answering 429."""

from __future__ import annotations

from bot import texts
from tests.bot.conftest import ManualClock, bot_running, settled
from tests.fakes.telegram import FakeTelegram

REFUSAL = texts.BUSY_QUEUE.split("{")[0]


async def test_fifty_users_three_messages_each_at_once(artifacts, tmp_path, loader):
    async with bot_running(artifacts, tmp_path / "db", load=loader, queue_size=16) as (tg, app):
        sent = [
            tg.user_says(user, f"message {i} from {user}")
            for i in range(3)
            for user in range(1, 51)
        ]
        await settled(tg, app, timeout=50)
        histories = {user: app.store.history(user) for user in range(1, 51)}
        open_turns = app.store.open_turns()

    answered = refused = merged = 0
    for user in range(1, 51):
        mine, covered = [m for m in sent if m["chat"]["id"] == user], []
        for m in mine:
            covered.append(m["text"])
            replies = tg.replies_to(m)
            if not replies:  # merged into a later message's turn
                continue
            assert len(replies) == 1, (m["text"], replies)  # one answer per turn
            if replies[0].startswith(REFUSAL):
                refused += len(covered)
            else:
                answered += 1
                merged += len(covered) - 1
                exchange = [
                    {"role": "user", "content": "\n".join(covered)},
                    {"role": "assistant", "content": replies[0]},
                ]
                history = histories[user]
                assert any(history[i : i + 2] == exchange for i in range(len(history)))
            covered = []
        assert covered == [], covered  # every message was answered or refused with others
        assert not any(r.startswith("⏳ I'm still") for m in mine for r in tg.replies_to(m))
    # the first message of every user that found room in the queue is answered
    assert answered >= 16 and answered + merged + refused == 150
    assert sum(len(h) for h in histories.values()) == 2 * answered  # no more, no less
    assert open_turns == [] and app.health.errors == []


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


async def test_a_flooded_chat_gets_nothing_inside_its_window_and_others_go_on(
    artifacts, tmp_path, loader
):
    clock = ManualClock()
    async with (
        FakeTelegram(clock=clock.time) as tg,
        bot_running(artifacts, tmp_path / "db", load=loader, tg=tg, clock=clock) as (_, app),
    ):
        tg.flood(1, retry_after=7, chat_id=1)  # Telegram: no more into chat 1 for 7 s
        flooded = tg.user_says(1, "Hello")
        other = tg.user_says(2, "Hello")
        await settled(tg, app)
    assert tg.windows[1] and tg.inside_windows() == []  # not even a typing action
    assert [c.status for c in tg.calls if c.params.get("chat_id") == 2] == [200] * len(
        [c for c in tg.calls if c.params.get("chat_id") == 2]
    )
    assert tg.replies_to(flooded) and tg.replies_to(other)
    # the bot waited the window once, for chat 1; chat 2 waited only for its pacing
    assert [s for s in clock.sleeps if s > 0.1] == [7]
    assert app.health.errors == []
