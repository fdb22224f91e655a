"""Checks that run before a handler: who may use the bot, and how often."""

from bot.middlewares.access import AllowList
from bot.middlewares.ratelimit import RateLimit

__all__ = ["AllowList", "RateLimit"]
