"""The bot's settings: BALABOL_* environment variables or a `.env` file (pydantic-settings).

Every default is visible in one block below. The token is a `SecretStr`: it is never
printed, logged or put in an error message.

Example: `BALABOL_BOT_TOKEN=123:abc BALABOL_ADMINS=42 balabol bot`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from balabol.errors import ConfigError
from balabol.settings import artifacts_dir
from runtime.base import DEFAULTS, SHORT_REPLY_TOKENS

ENV_PREFIX = "BALABOL_"
TOKEN_SHAPE = re.compile(r"^\d+:[\w-]+$")  # what @BotFather hands out: "123456:AAE..."
IdList = Annotated[list[int], NoDecode]  # "1, 2 3" in the environment, not JSON


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- Telegram --------------------------------------------------------------------------
    bot_token: SecretStr
    api_base: str | None = None  # a local Bot API server, e.g. http://127.0.0.1:8081
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str | None = None  # public https URL Telegram posts updates to
    webhook_secret: SecretStr | None = None  # checked on every webhook request
    webhook_host: str = "0.0.0.0"
    webhook_port: int = Field(8080, ge=1, le=65535)
    webhook_path: str = "/telegram"

    # --- models ----------------------------------------------------------------------------
    artifacts: Path = Field(default_factory=artifacts_dir)  # BALABOL_ARTIFACTS, as the CLI
    artifact: str | None = None  # default artifact; None = smollm2-135m-instruct or the first
    format: str = "auto"  # default format or alias (auto, gguf)
    formats: Annotated[list[str], NoDecode] = []  # offered in /model; empty = all usable
    threads: int | None = Field(None, ge=1)  # per loaded model; None = all cores
    max_loaded: int = Field(2, ge=1)  # models kept in memory at once
    parallel: int | Literal["auto"] = "auto"  # chats decoded together (gguf); auto: measured

    # --- replies ---------------------------------------------------------------------------
    # sampling defaults: the runtime's (runtime/base.py), a message's length its short reply's
    max_new_tokens: int = Field(SHORT_REPLY_TOKENS, ge=1)  # default reply length (tokens)
    max_reply_tokens: int = Field(512, ge=1)  # the longest a user may ask for in /settings
    temperature: float = Field(DEFAULTS.temperature, ge=0, le=5)
    top_k: int = Field(DEFAULTS.top_k, ge=0)
    top_p: float = Field(DEFAULTS.top_p, gt=0, le=1)
    repetition_penalty: float = Field(DEFAULTS.repetition_penalty, ge=0.5, le=3)
    system_prompt: str | None = None
    persona: Path | None = None  # JSON: {"system": "...", "examples": [["hi", "hey!"]]}

    # --- capacity and safety ---------------------------------------------------------------
    queue_size: int = Field(16, ge=1)  # requests waiting for the model, all users together
    rate_limit: int = Field(20, ge=1)  # messages per user ...
    rate_window: float = Field(60.0, gt=0)  # ... per this many seconds
    allowed_users: IdList = []  # empty = everyone
    admins: IdList = []  # may /reload; always allowed
    max_input_chars: int = Field(4000, ge=1)  # longer messages are cut, with a note
    edit_interval: float = Field(1.0, ge=0)  # seconds between edits of a streamed reply
    # Telegram's pacing (bot/gate.py): every send and edit waits for its slot
    chat_interval: float = Field(1.0, ge=0)  # seconds between sends into one chat
    group_interval: float = Field(3.0, ge=0)  # ... into one group (20 per minute)
    send_rate: float = Field(30.0, gt=0)  # sends per second, all chats together
    shutdown_grace: float = Field(30.0, ge=0)  # seconds in-flight replies get to finish

    # --- storage ---------------------------------------------------------------------------
    db: Path = Path("balabol-bot.sqlite3")
    history_limit: int = Field(40, ge=2)  # messages kept per chat (user + bot)

    @field_validator("allowed_users", "admins", mode="before")
    @classmethod
    def _ids(cls, value):
        if isinstance(value, str):
            return [int(part) for part in re.split(r"[,\s]+", value.strip()) if part]
        return value

    @field_validator("formats", mode="before")
    @classmethod
    def _names(cls, value):
        if isinstance(value, str):
            return [part for part in re.split(r"[,\s]+", value.strip()) if part]
        return value

    @field_validator("bot_token")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        if not TOKEN_SHAPE.match(value.get_secret_value().strip()):
            # the value itself stays out of the message: it may be a real token with a typo
            raise ValueError("does not look like a bot token (digits, a colon, letters)")
        return SecretStr(value.get_secret_value().strip())

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_new_tokens > self.max_reply_tokens:
            raise ValueError(
                f"max_new_tokens {self.max_new_tokens} exceeds max_reply_tokens "
                f"{self.max_reply_tokens}"
            )
        if self.mode == "webhook" and not self.webhook_url:
            raise ValueError("webhook mode needs BALABOL_WEBHOOK_URL (the public https URL)")
        return self

    @property
    def token(self) -> str:
        return self.bot_token.get_secret_value()


def load_settings(env_file: Path | None = None, **overrides) -> Settings:
    """Settings from the environment (and env_file), with each problem named by its variable."""
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            var = ENV_PREFIX + field.upper() if field else "settings"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing" and field == "bot_token":
                msg = "is not set: get a token from @BotFather and put it in .env (see README)"
            problems.append(f"{var} {msg}")
        raise ConfigError("bad bot settings: " + "; ".join(problems)) from None
