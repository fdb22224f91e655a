"""Wiring: settings -> storage, models, replies -> one Dispatcher; polling or a webhook;
start-up checks and a graceful shutdown.

Dependencies reach handlers as keyword arguments given to `Dispatcher(...)`: a handler
that names `store`, `models`, `replies`, `settings` or `health` receives it.

Example: `balabol bot` (polling) or `BALABOL_MODE=webhook BALABOL_WEBHOOK_URL=https://… balabol bot`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
from collections.abc import Callable

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramUnauthorizedError,
)

from balabol.errors import BalabolError, ConfigError
from bot import handlers
from bot.config import Settings
from bot.gate import Clock, SendGate
from bot.handlers.commands import MENU
from bot.handlers.errors import Health
from bot.middlewares import AllowList, RateLimit
from bot.models import ModelPool
from bot.recovery import recover
from bot.replies import Replies
from bot.storage import Store

log = logging.getLogger(__name__)


def make_gate(settings: Settings, clock: Clock | None = None) -> SendGate:
    return SendGate(
        chat_interval=settings.chat_interval,
        group_interval=settings.group_interval,
        rate=settings.send_rate,
        clock=clock,
    )


def make_bot(settings: Settings, gate: SendGate) -> Bot:
    """A Bot whose every call passes `gate` (pacing and flood control in one place)."""
    session = (
        AiohttpSession(api=TelegramAPIServer.from_base(settings.api_base))
        if settings.api_base
        else AiohttpSession()
    )
    session.middleware(gate)
    return Bot(settings.token, session=session)


class App:
    """The bot, ready to run: `await App(settings).run()` until SIGINT/SIGTERM or `stop()`.

    `load` replaces runtime.loader.load and `clock` the time that pacing and flood control
    wait on (both for tests).
    """

    def __init__(
        self, settings: Settings, *, load: Callable | None = None, clock: Clock | None = None
    ):
        self.settings = s = settings
        self.store = Store(s.db, history_limit=s.history_limit)
        self.models = ModelPool(
            s.artifacts,
            artifact=s.artifact,
            fmt=s.format,
            formats=s.formats,
            queue_size=s.queue_size,
            max_loaded=s.max_loaded,
            threads=s.threads,
            parallel=s.parallel,
            load=load,
        )
        self.gate = make_gate(s, clock)
        self.replies = Replies(settings=s, store=self.store, models=self.models, clock=clock)
        self.health = Health()
        self.bot = make_bot(s, self.gate)
        self.dp = Dispatcher(
            settings=s,
            store=self.store,
            models=self.models,
            replies=self.replies,
            health=self.health,
        )
        # inner middlewares: they see only events a handler takes, after its filters
        allow = AllowList(s.allowed_users, s.admins)
        self.dp.message.middleware(allow)
        self.dp.callback_query.middleware(allow)
        self.dp.message.middleware(RateLimit(s.rate_limit, s.rate_window))
        self.dp.include_routers(*handlers.routers())
        self.dp.startup.register(self._on_startup)
        self.dp.shutdown.register(self._on_shutdown)
        self._stop = asyncio.Event()
        self._closed = False

    # --- the life cycle --------------------------------------------------------------------
    async def run(self, *, handle_signals: bool = True) -> None:
        try:
            await self.check()
            if self.settings.mode == "webhook":
                await self._serve_webhook(handle_signals)
            else:
                await self.dp.start_polling(
                    self.bot, handle_signals=handle_signals, close_bot_session=False
                )
        finally:
            await self._close()

    async def check(self) -> None:
        """Fail early and clearly: a bad token, no model, a broken default model."""
        try:
            me = await self.bot.me()
        except TelegramUnauthorizedError:
            raise ConfigError(
                "Telegram rejected BALABOL_BOT_TOKEN (401 Unauthorized): it was revoked or "
                "mistyped; copy it again from @BotFather (/mybots → API Token)"
            ) from None
        except TelegramNetworkError as e:
            where = self.settings.api_base or "api.telegram.org"
            raise BalabolError(f"cannot reach the Telegram Bot API at {where}: {e}") from None
        self.models.check()
        await self.models.get(self.models.default())
        log.info(
            "bot @%s (id %s) ready; default model %s",
            me.username,
            me.id,
            self.models.default().label,
        )

    async def stop(self) -> None:
        """What SIGTERM does: stop taking updates, then shut down gracefully."""
        self._stop.set()
        with contextlib.suppress(RuntimeError):  # polling not started (webhook mode)
            await self.dp.stop_polling()

    async def _on_startup(self, bot: Bot) -> None:
        await recover(self.store, bot)  # before any update: what a crash left half-done
        await bot.set_my_commands(MENU)
        if self.settings.mode == "polling":
            await bot.delete_webhook(drop_pending_updates=False)

    async def _on_shutdown(self) -> None:
        log.info("shutting down")
        await self.replies.shutdown(self.settings.shutdown_grace)

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.replies.closing = True
        await self.models.close()
        self.store.close()
        await self.bot.session.close()

    # --- webhook mode ----------------------------------------------------------------------
    async def _serve_webhook(self, handle_signals: bool) -> None:
        from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
        from aiohttp import web

        s = self.settings
        # no secret configured: a fresh one per start, so only Telegram can post updates
        secret = (
            s.webhook_secret.get_secret_value() if s.webhook_secret else secrets.token_urlsafe(32)
        )
        app = web.Application()
        setup_application(app, self.dp, bot=self.bot)  # first: its shutdown runs first
        SimpleRequestHandler(self.dp, self.bot, secret_token=secret).register(
            app, path=s.webhook_path
        )
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.TCPSite(runner, s.webhook_host, s.webhook_port).start()
            await self.bot.set_webhook(
                s.webhook_url,
                secret_token=secret,
                allowed_updates=self.dp.resolve_used_update_types(),
            )
        except OSError as e:
            await runner.cleanup()
            raise ConfigError(
                f"cannot listen on BALABOL_WEBHOOK_HOST={s.webhook_host} "
                f"BALABOL_WEBHOOK_PORT={s.webhook_port}: {e}"
            ) from None
        except TelegramBadRequest as e:
            await runner.cleanup()
            raise ConfigError(
                f"Telegram refused BALABOL_WEBHOOK_URL={s.webhook_url}: {e.message} "
                "(it must be a public https URL on port 443, 80, 88 or 8443)"
            ) from None
        log.info("webhook on %s:%s%s", s.webhook_host, s.webhook_port, s.webhook_path)
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
