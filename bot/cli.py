"""`balabol bot`: run the Telegram bot until SIGINT/SIGTERM.

Settings come from BALABOL_* environment variables or a .env file (see bot/config.py and
the README); the flags below override the few worth changing per run.
Example: `BALABOL_BOT_TOKEN=123:abc balabol bot --log-level debug`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from cyclopts import Parameter


def bot(
    *,
    env_file: Annotated[Path | None, Parameter(help="a .env file with BALABOL_* settings")] = Path(
        ".env"
    ),
    mode: Annotated[
        Literal["polling", "webhook"] | None, Parameter(help="override BALABOL_MODE")
    ] = None,
    log_level: Annotated[str, Parameter(help="debug, info, warning or error")] = "info",
) -> int:
    """Run the Telegram bot (token and settings: BALABOL_* variables or .env; see README)."""
    import asyncio
    import logging

    from bot.app import App
    from bot.config import load_settings

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = load_settings(env_file, **({"mode": mode} if mode else {}))
    asyncio.run(App(settings).run())
    return 0
