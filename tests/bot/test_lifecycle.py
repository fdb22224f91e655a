"""Start-up, restart, shutdown and webhook mode."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

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


def bot_process(tg: FakeTelegram, artifacts, db, log) -> subprocess.Popen:
    """`balabol bot` in a child process (the tiny llama, replies streamed piece by piece)."""
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
        "BALABOL_BOT_TOKEN": tg.token,
        "BALABOL_API_BASE": tg.url,
        "BALABOL_DB": str(db),
        "BALABOL_ARTIFACTS": str(artifacts),
        "BALABOL_ARTIFACT": "llama",
        "BALABOL_FORMAT": "gguf-q4_k_m",
        "BALABOL_FORMATS": "gguf-q4_k_m",
        "BALABOL_MAX_NEW_TOKENS": "16",
        "BALABOL_TEMPERATURE": "0",
        "BALABOL_EDIT_INTERVAL": "0",
        "BALABOL_CHAT_INTERVAL": "0",
        "BALABOL_THREADS": "1",
    }
    code = "import sys; from balabol.cli import main; sys.exit(main(sys.argv[1:]))"
    args = [sys.executable, "-c", code, "bot", "--env-file", str(db.parent / "none.env")]
    return subprocess.Popen(args, env=env, cwd=root, stdout=log, stderr=log)


def open_turns(db) -> int:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute("SELECT count(*) FROM turns").fetchone()[0]


async def test_kill_9_mid_reply_the_restarted_bot_marks_it_and_keeps_history(
    artifacts, tmp_path, loader
):
    db = tmp_path / "db"
    async with FakeTelegram() as tg:
        with open(tmp_path / "child.log", "wb") as log:
            child = bot_process(tg, artifacts, db, log)
            try:
                tg.stall("editMessageText")  # the reply's second edit never comes back
                story = tg.user_says(1, "Tell me a long story")
                await tg.wait_for(lambda: tg.called("editMessageText"), 60)  # half-way
                later = tg.user_says(1, "and then?")  # accepted while the reply runs
                await tg.wait_for(lambda: not tg.updates and open_turns(db) == 2, 20)
            finally:
                child.kill()  # SIGKILL: no shutdown, no finally blocks
                child.wait()
        tg.unstall()
        (shown,) = tg.replies_to(story)  # what the user saw when the bot died
        async with bot_running(artifacts, db, load=loader, tg=tg) as (_, app):
            await settled(tg, app)
            history = app.store.history(1)
            left = app.store.open_turns()
    (cut,) = tg.replies_to(story)
    reply = cut.removesuffix("\n\n" + texts.CUT_BY_CRASH)
    assert reply != cut and reply.startswith(shown) and reply  # at least what was shown
    assert tg.replies_to(later) == [texts.RESTARTED_UNANSWERED]
    assert history == [
        {"role": "user", "content": "Tell me a long story"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "and then?"},  # /retry answers it
    ]
    assert left == [] and not loader.generations  # nothing answered twice
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
