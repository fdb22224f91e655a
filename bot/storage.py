"""SQLite storage (WAL): each chat's history, each user's settings and model choice, and
the turns in progress.

Survives restarts, also `kill -9`: a user's message is stored in `turns` when it is
accepted and the reply as it streams (what Telegram shows: message ids and texts), so a
restarted bot finds the exchanges it was in the middle of (`open_turns`). History is
bounded per chat. Calls are sub-millisecond (WAL with
synchronous=NORMAL does not fsync per commit), so they run on the event loop thread,
which is also the only thread that touches the connection.

Example: `sqlite3 balabol-bot.sqlite3 'select role, content from messages'`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, fields
from pathlib import Path

SCHEMA_VERSION = 2  # 2 added `turns`; a version-1 file is upgraded in place
SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id INTEGER NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS messages_by_chat ON messages (chat_id, id);
CREATE TABLE IF NOT EXISTS prefs (
    user_id INTEGER PRIMARY KEY,
    temperature REAL,
    max_new_tokens INTEGER,
    artifact TEXT,
    format TEXT
);
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    reply_to INTEGER,            -- the user's (last) message: what the reply answers
    text TEXT NOT NULL,          -- the user's words (merged, when several)
    started INTEGER NOT NULL DEFAULT 0,  -- 0: waits behind the user's running reply
    retry INTEGER NOT NULL DEFAULT 0,    -- /retry: replaces the last exchange when done
    reply TEXT,                  -- the reply so far (NULL: nothing generated yet)
    shown TEXT NOT NULL DEFAULT '[]'     -- JSON [[message id, text], ...] Telegram shows
);
"""


@dataclass(frozen=True)
class Prefs:
    """A user's choices; None means "the bot's default"."""

    temperature: float | None = None
    max_new_tokens: int | None = None
    artifact: str | None = None
    format: str | None = None


PREF_FIELDS = tuple(f.name for f in fields(Prefs))


@dataclass(frozen=True)
class Turn:
    """An exchange in progress (or a message waiting for one), as stored."""

    id: int
    chat_id: int
    user_id: int
    reply_to: int | None
    text: str
    started: bool
    retry: bool
    reply: str | None
    shown: list  # [[message id, text], ...]


class Store:
    def __init__(self, path: Path, *, history_limit: int = 40):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.history_limit = path, history_limit
        self.db = sqlite3.connect(path, isolation_level=None)  # autocommit; explicit txns
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, SCHEMA_VERSION):
            raise RuntimeError(f"{path} has schema {version}; this bot reads {SCHEMA_VERSION}")
        self.db.executescript(SCHEMA)
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # --- history ---------------------------------------------------------------------------
    def history(self, chat_id: int) -> list[dict[str, str]]:
        rows = self.db.execute(
            "SELECT role, content FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,)
        )
        return [{"role": role, "content": content} for role, content in rows]

    def last_exchange(self, chat_id: int) -> tuple[str, str | None] | None:
        """(user text, reply or None) of the chat's newest exchange, or None."""
        rows = self.db.execute(
            "SELECT role, content FROM messages WHERE chat_id = ? ORDER BY id DESC LIMIT 2",
            (chat_id,),
        ).fetchall()
        if rows and rows[0][0] == "user":
            return rows[0][1], None
        if len(rows) == 2 and rows[1][0] == "user":
            return rows[1][1], rows[0][1]
        return None

    def add_exchange(
        self, chat_id: int, user: str, reply: str | None, *, replace_last: bool = False
    ) -> None:
        """Append a user message and the reply (None: no reply came) in one transaction;
        replace_last first drops the previous exchange (/retry)."""
        with self._transaction():
            self._add_exchange(chat_id, user, reply, replace_last=replace_last)

    def _add_exchange(self, chat_id: int, user: str, reply: str | None, *, replace_last: bool):
        """The rows of add_exchange, inside the caller's transaction."""
        if replace_last and (last := self.last_exchange(chat_id)) is not None:
            n = 1 if last[1] is None else 2
            self.db.execute(
                "DELETE FROM messages WHERE id IN "
                "(SELECT id FROM messages WHERE chat_id = ? ORDER BY id DESC LIMIT ?)",
                (chat_id, n),
            )
        rows = [(chat_id, "user", user)]
        if reply is not None:
            rows.append((chat_id, "assistant", reply))
        self.db.executemany("INSERT INTO messages (chat_id, role, content) VALUES (?, ?, ?)", rows)
        # bounded history: keep the newest history_limit messages of this chat
        self.db.execute(
            "DELETE FROM messages WHERE chat_id = ? AND id <= (SELECT id FROM messages "
            "WHERE chat_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (chat_id, chat_id, self.history_limit),
        )

    # --- turns in progress ----------------------------------------------------------------
    def open_turn(self, chat_id: int, user_id: int, reply_to: int | None, text: str) -> int:
        """Store an accepted message (not started yet); its id."""
        return self.db.execute(
            "INSERT INTO turns (chat_id, user_id, reply_to, text) VALUES (?, ?, ?, ?)",
            (chat_id, user_id, reply_to, text),
        ).lastrowid

    def start_turn(self, ids: list[int], text: str, *, reply_to: int | None, retry: bool) -> int:
        """The messages `ids` become one started turn answering `text`; its id."""
        with self._transaction():
            first, rest = ids[0], ids[1:]
            self.db.executemany("DELETE FROM turns WHERE id = ?", [(i,) for i in rest])
            self.db.execute(
                "UPDATE turns SET text = ?, reply_to = ?, started = 1, retry = ? WHERE id = ?",
                (text, reply_to, int(retry), first),
            )
        return first

    def save_turn(self, turn_id: int, *, text: str, reply: str | None, shown: list) -> None:
        self.db.execute(
            "UPDATE turns SET text = ?, reply = ?, shown = ? WHERE id = ?",
            (text, reply, json.dumps(shown), turn_id),
        )

    def close_turn(
        self, turn_id: int, chat_id: int, user: str, reply: str | None, *, replace_last: bool
    ) -> None:
        """The turn is over: its exchange goes into the history, in one transaction."""
        with self._transaction():
            self._add_exchange(chat_id, user, reply, replace_last=replace_last)
            self.db.execute("DELETE FROM turns WHERE id = ?", (turn_id,))

    def drop_turns(self, ids: list[int]) -> None:
        """Turns that end with no exchange (refused, nothing to answer)."""
        self.db.executemany("DELETE FROM turns WHERE id = ?", [(i,) for i in ids])

    def open_turns(self) -> list[Turn]:
        rows = self.db.execute(
            "SELECT id, chat_id, user_id, reply_to, text, started, retry, reply, shown "
            "FROM turns ORDER BY id"
        )
        return [
            Turn(i, c, u, to, text, bool(st), bool(rt), reply, json.loads(shown))
            for i, c, u, to, text, st, rt, reply, shown in rows
        ]

    def reset(self, chat_id: int) -> int:
        return self.db.execute("DELETE FROM messages WHERE chat_id = ?", (chat_id,)).rowcount

    # --- per-user settings -----------------------------------------------------------------
    def prefs(self, user_id: int) -> Prefs:
        row = self.db.execute(
            f"SELECT {', '.join(PREF_FIELDS)} FROM prefs WHERE user_id = ?", (user_id,)
        ).fetchone()
        return Prefs(*row) if row else Prefs()

    def set_prefs(self, user_id: int, **changes) -> Prefs:
        unknown = set(changes) - set(PREF_FIELDS)
        if unknown:
            raise ValueError(f"unknown preference(s) {sorted(unknown)}; known: {PREF_FIELDS}")
        with self._transaction():
            self.db.execute("INSERT OR IGNORE INTO prefs (user_id) VALUES (?)", (user_id,))
            for name, value in changes.items():  # names checked above: safe to interpolate
                self.db.execute(f"UPDATE prefs SET {name} = ? WHERE user_id = ?", (value, user_id))
        return self.prefs(user_id)

    def clear_prefs(self, user_id: int, *names: str) -> Prefs:
        return self.set_prefs(user_id, **dict.fromkeys(names, None))

    # ---------------------------------------------------------------------------------------
    def _transaction(self):
        return _Transaction(self.db)

    def close(self) -> None:
        self.db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
