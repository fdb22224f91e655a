"""The KV states of chats that are not being served right now, kept in memory so the next
turn of a chat reads only its new message, not the whole history again.

Least recently used first out, within a byte budget: `BALABOL_KV_CACHE_MB` (0 turns reuse
off), by default a quarter of the free memory, at most 1 GiB. A chat whose state was
dropped is prefilled again: slower, never wrong.

Example: `BALABOL_KV_CACHE_MB=256 balabol bot`.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from balabol.errors import ConfigError
from balabol.settings import available_memory

ENV = "BALABOL_KV_CACHE_MB"
SOLO = "solo"  # the chat key of callers that name none (balabol generate, chat, benchmarks)
DEFAULT_MAX_MB = 1024


def budget_bytes(value: str | None = None) -> int:
    """The cache budget: `value` (or $BALABOL_KV_CACHE_MB) in MiB, else sized from free memory."""
    raw = os.environ.get(ENV) if value is None else value
    if raw is None or raw.strip() in ("", "auto"):
        return min(available_memory() // 4, DEFAULT_MAX_MB << 20)
    try:
        mb = float(raw)
    except ValueError:
        mb = -1
    if mb < 0:
        raise ConfigError(f"{ENV}={raw!r} is invalid: give megabytes ≥ 0 (0 = no reuse) or auto")
    return int(mb * 2**20)


@dataclass
class Saved:
    ids: list[int]  # the tokens whose state this is
    state: object  # what the backend needs to restore it (bytes, arrays)
    nbytes: int


class StateCache:
    """key -> Saved, least recently used dropped first once `budget` bytes are exceeded."""

    def __init__(self, budget: int):
        self.budget = budget
        self._items: OrderedDict[Hashable, Saved] = OrderedDict()
        self._lock = threading.Lock()
        self.used = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def put(self, key: Hashable, saved: Saved) -> bool:
        """Keep a state (replacing the key's older one); False when it alone exceeds the budget."""
        with self._lock:
            self._drop(key)
            if saved.nbytes > self.budget:
                return False
            self._items[key] = saved
            self.used += saved.nbytes
            while self.used > self.budget:
                old, _ = next(iter(self._items.items()))
                self._drop(old)
                self.evictions += 1
            return True

    def pop(self, key: Hashable) -> Saved | None:
        with self._lock:
            saved = self._items.get(key)
            if saved is not None:
                self._drop(key)
            return saved

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.used = 0

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._drop(key)

    def _drop(self, key: Hashable) -> None:
        saved = self._items.pop(key, None)
        if saved is not None:
            self.used -= saved.nbytes


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two id lists share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
