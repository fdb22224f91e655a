"""SQLite storage (WAL): each chat's history, each user's settings and model choice.

Survives restarts; history is bounded per chat. Calls are sub-millisecond (WAL with
synchronous=NORMAL does not fsync per commit), so they run on the event loop thread,
which is also the only thread that touches the connection.

Example: `sqlite3 balabol-bot.sqlite3 'select role, content from messages'`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields
from pathlib import Path

SCHEMA_VERSION = 1
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
"""


@dataclass(frozen=True)
class Prefs:
    """A user's choices; None means "the bot's default"."""

    temperature: float | None = None
    max_new_tokens: int | None = None
    artifact: str | None = None
    format: str | None = None


PREF_FIELDS = tuple(f.name for f in fields(Prefs))


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
        if version not in (0, SCHEMA_VERSION):
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
            self.db.executemany(
                "INSERT INTO messages (chat_id, role, content) VALUES (?, ?, ?)", rows
            )
            # bounded history: keep the newest history_limit messages of this chat
            self.db.execute(
                "DELETE FROM messages WHERE chat_id = ? AND id <= (SELECT id FROM messages "
                "WHERE chat_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (chat_id, chat_id, self.history_limit),
            )

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
