"""Per-user rate limit: at most `limit` messages per `window` seconds (sliding window).

The first message over the limit gets a "slow down" note with the wait; the rest of that
burst are dropped silently, so a flood cannot make the bot flood back.
Example: `BALABOL_RATE_LIMIT=10 BALABOL_RATE_WINDOW=60 balabol bot`.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque

from aiogram import BaseMiddleware
from aiogram.types import Message

from bot import texts


class RateLimit(BaseMiddleware):
    def __init__(self, limit: int, window: float, *, clock=time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self.seen: defaultdict[int, deque[float]] = defaultdict(deque)
        self.warned: dict[int, float] = {}  # user -> when their current burst was refused

    async def __call__(self, handler, event: Message, data):
        user = data.get("event_from_user")
        if user is None:
            return await handler(event, data)
        now, times = self.clock(), self.seen[user.id]
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) < self.limit:
            times.append(now)
            self.warned.pop(user.id, None)
            return await handler(event, data)
        if user.id not in self.warned:
            self.warned[user.id] = now
            wait = math.ceil(times[0] + self.window - now)
            await event.reply(
                texts.SLOW_DOWN.format(limit=self.limit, window=self.window, wait=wait)
            )
        return None
