"""Start-up, restart, shutdown and webhook mode."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading

import pytest

from balabol.cli import main as cli
from balabol.errors import BalabolError
from bot import texts
from bot.app import App
from bot.storage import Store
from tests.bot.conftest import bot_running, settings_for, settled
from tests.fakes.telegram import FakeTelegram


async def test_history_and_settings_survive_a_restart(artifacts, tmp_path, loader):
    db = tmp_path / "db"
    async with FakeTelegram() as tg:
        async with bot_running(artifacts, db, load=loader, tg=tg) as (_, app):
            tg.user_says(1, "remember me")
            tg.user_says(1, "/settings temperature 0.5")
            tg.user_says(1, "/settings length 4")
            await settled(tg, app)
            before = app.store.history(1)
        async with bot_running(artifacts, db, load=loader, tg=tg) as (_, app):
            tg.user_says(1, "do you remember?")
            await settled(tg, app)
    last = loader.generations[-1]
    assert last.messages == [*before, {"role": "user", "content": "do you remember?"}]
    assert (last.config.temperature, last.config.max_new_tokens) == (0.5, 4)
    assert [m["content"] for m in Store(db).history(1)][:2] == ["remember me", before[1]["content"]]


@pytest.mark.parametrize(("grace", "cut"), [(0, True), (30, False)], ids=["cut", "finished"])
async def test_sigterm_finishes_or_cuts_replies_and_keeps_history(
    artifacts, tmp_path, make_loader, grace, cut
):
    # the reply is held half-way until the shutdown has begun: released then, it finishes
    # within the grace; with no grace it is cut (the cancel ends the hold)
    hold = threading.Event()
    loader = make_loader(hold=hold)
    async with FakeTelegram() as tg:
        settings = settings_for(
            tg, artifacts, tmp_path / "db", max_new_tokens=16, shutdown_grace=grace
        )
        app = App(settings, load=loader)
        task = asyncio.create_task(app.run(handle_signals=True))
        await tg.wait_for(lambda: tg.polls, also=task)
        story = tg.user_says(1, "Tell me a long story")
        await tg.wait_for(lambda: tg.replies_to(story) and loader.held.is_set())  # half-way
        os.kill(os.getpid(), signal.SIGTERM)
        await tg.wait_for(lambda: app.replies.closing, also=task)
        if not cut:
            hold.set()
        await asyncio.wait_for(task, 20)
    (reply,) = tg.replies_to(story)
    history = Store(tmp_path / "db").history(1)
    note = "\n\n" + texts.CUT_BY_RESTART
    assert reply.endswith(note) == cut
    assert history == [
        {"role": "user", "content": "Tell me a long story"},
        {"role": "assistant", "content": reply.removesuffix(note)},
    ]
    assert loader.generations[0].config.max_new_tokens == 16
    stopped_by = loader.cache[(str(artifacts), "llama", "gguf-q4_k_m")].last_stats.stopped_by
    assert (stopped_by == "cancel") == cut
    assert app.health.errors == []


async def test_bad_token_is_a_clear_error_at_start_up(tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    async with FakeTelegram() as tg:
        monkeypatch.setenv("BALABOL_BOT_TOKEN", "123456:wrong-secret-value")
        monkeypatch.setenv("BALABOL_API_BASE", tg.url)
        monkeypatch.setenv("BALABOL_DB", str(tmp_path / "db"))
        code = await asyncio.to_thread(cli, ["bot", "--env-file", str(tmp_path / "none.env")])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: Telegram rejected BALABOL_BOT_TOKEN (401 Unauthorized)" in err
    assert "wrong-secret-value" not in err + caplog.text  # the token is never shown
    assert [c.method for c in tg.calls] == ["getMe"]


async def test_unreachable_api_is_a_clear_error(artifacts, tmp_path, loader):
    async with FakeTelegram() as tg:
        settings = settings_for(tg, artifacts, tmp_path / "db", api_base="http://127.0.0.1:9")
    with pytest.raises(BalabolError, match=r"cannot reach the Telegram Bot API at http://127"):
        await App(settings, load=loader).run(handle_signals=False)


async def test_no_artifacts_is_a_clear_error(tmp_path, loader):
    async with FakeTelegram() as tg:
        settings = settings_for(tg, tmp_path / "empty", tmp_path / "db")
        with pytest.raises(BalabolError, match=r"no usable model in .*make export"):
            await App(settings, load=loader).run(handle_signals=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_webhook_mode_checks_the_secret(artifacts, tmp_path, loader):
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram"
    async with FakeTelegram() as tg:
        settings = settings_for(
            tg,
            artifacts,
            tmp_path / "db",
            mode="webhook",
            webhook_url=url,
            webhook_host="127.0.0.1",
            webhook_port=port,
            webhook_secret="s3cret",
        )
        app = App(settings, load=loader)
        task = asyncio.create_task(app.run(handle_signals=False))
        await tg.wait_for(lambda: tg.webhook, also=task)
        msg = tg.message(1, "Hello over a webhook")
        assert await tg.post_update({"message": msg}, secret="wrong") == 401
        assert await tg.post_update({"message": msg}) == 401
        assert await tg.post_update({"message": msg}, secret="s3cret") == 200
        await tg.wait_for(lambda: app.store.history(1), also=task)
        await app.stop()
        await task
    assert tg.webhook["url"] == url and tg.webhook["secret_token"] == "s3cret"
    assert tg.replies_to(msg) and not tg.called("getUpdates")
    assert app.health.errors == []


async def test_webhook_port_in_use_is_a_clear_error(artifacts, tmp_path, loader):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with FakeTelegram() as tg:
            settings = settings_for(
                tg,
                artifacts,
                tmp_path / "db",
                mode="webhook",
                webhook_url="https://example.org/telegram",
                webhook_host="127.0.0.1",
                webhook_port=port,
            )
            with pytest.raises(BalabolError, match=f"BALABOL_WEBHOOK_PORT={port}"):
                await App(settings, load=loader).run(handle_signals=False)
