"""Telegram Desktop export -> chat samples in which the persona is the assistant.

Reads one chat's `result.json` or a full-account export (`chats.list` and `left_chats.list`;
its owner is the default persona). The file is streamed with ijson, 16 KB at a time, and
messages are turned into samples as they come, so a 500 MB export never becomes 500 MB of
Python objects: memory stays at a few hundred KB whatever the file's size.

What happens to each message, in order:
1. service messages (joins, pins, calls) are skipped;
2. `text`, a string or a list of strings and entity objects, is joined into plain text and
   cleaned (clean.py); a sticker without text becomes its emoji; other media without text
   is dropped, or becomes `<photo>`, `<voice>`, … with `--media placeholder`;
3. a forwarded message keeps its text but never its original sender's name (the `mentions`
   step also removes that name from later texts) and counts as someone else's words;
4. the persona's messages are `assistant`, everyone else's `user`; consecutive messages of
   one side merge into one turn, joined by a newline;
5. a pause longer than `--gap-minutes` starts a new session, unless the message replies to
   one of the current session (replies hold a conversation together);
6. each session is cut into samples of at most `--max-turns` turns that start with a user
   turn and end with the persona's reply. A session the persona opens by replying to an
   older message gets that message as its prompt; otherwise the opening is dropped.

Example: `balabol data telegram --input ChatExport/result.json --name me --persona "Anna"`
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from balabol.errors import ConfigError, DataError, require
from training.data.clean import Cleaner
from training.data.sample import CountingReader, Sample, require_file

Media = Literal["drop", "placeholder"]
MEDIA_MODES: tuple[str, ...] = ("drop", "placeholder")

# What marks a message as media, and the placeholder word for it (`<photo>`, ...).
MEDIA_TYPES = {
    "sticker": "sticker",
    "voice_message": "voice",
    "video_message": "video",
    "video_file": "video",
    "animation": "gif",
    "audio_file": "audio",
}
MEDIA_KEYS = {
    "photo": "photo",
    "file": "file",
    "poll": "poll",
    "location_information": "location",
    "contact_information": "contact",
    "game_title": "game",
    "invoice_information": "invoice",
}

# Where things sit in the two export layouts (ijson prefixes).
_LAYOUTS = {"messages": "chat", "chats": "account"}  # the top-level key that tells which
_ACCOUNT_CHATS = ("chats.list.item", "left_chats.list.item")
_ACCOUNT_MESSAGES = frozenset(f"{chat}.messages.item" for chat in _ACCOUNT_CHATS)
_ACCOUNT_FIELDS = {f"{chat}.{key}": key for chat in _ACCOUNT_CHATS for key in ("id", "name")}
_OWNER = "personal_information.user_id"
_OPEN, _CLOSE = frozenset({"start_map", "start_array"}), frozenset({"end_map", "end_array"})
_SCALARS = frozenset({"number", "string", "boolean", "null"})
_BUF = 16 * 1024  # ijson's read size: it parses a whole read at once, so memory scales with it
REPLY_MEMORY = 1000  # recent messages kept per chat, to follow replies to them


@dataclass(frozen=True)
class TelegramConfig:
    # The docstrings are the help of `balabol data telegram`'s flags.
    persona: str | None = None
    """whose messages the bot learns: a sender's name or from_id ("user123" or "123") (default: the owner of a full-account export)"""
    gap_minutes: float = 60.0
    """a longer pause (minutes) starts a new session"""
    max_turns: int = 8
    """turns per sample (user and assistant): the context window"""
    media: Media = "drop"
    """media without text is dropped, or becomes a placeholder (<photo>, <voice>, ...)"""
    sticker_emoji: bool = True
    """a sticker becomes its emoji (--no-sticker-emoji: a sticker is media)"""
    chats: tuple[str, ...] = ()
    """only these chats (names or ids) of a full-account export"""

    def __post_init__(self):
        if not self.gap_minutes > 0:
            raise ConfigError(f"--gap-minutes {self.gap_minutes!r}: must be above 0")
        if not isinstance(self.max_turns, int) or self.max_turns < 2:
            raise ConfigError(
                f"--max-turns {self.max_turns!r}: must be a whole number >= 2 "
                "(a sample needs a user turn and the persona's reply)"
            )
        if self.media not in MEDIA_MODES:
            raise ConfigError(f"--media {self.media!r}: must be one of {', '.join(MEDIA_MODES)}")


@dataclass(frozen=True)
class Chat:
    key: str  # its id, or its position in the export
    name: str | None


@dataclass
class _Export:
    """What the stream has told about the export besides messages."""

    top_keys: list[str] = field(default_factory=list)
    chat: dict = field(default_factory=dict)  # id, name, type of a single-chat export
    owner: int | str | None = None  # personal_information.user_id of a full-account export


# --- reading the file ------------------------------------------------------------------------


def export_file(path: Path) -> Path:
    """result.json itself, or inside the export folder given."""
    path = Path(path)
    if path.is_dir() and (path / "result.json").is_file():
        path = path / "result.json"
    return require_file(
        path,
        what="Telegram export",
        fix="export a chat from Telegram Desktop (Export chat history, format: JSON) and "
        "pass its result.json, or the folder that holds it, as --input",
    )


def _json_error(path: Path, reader: CountingReader, error: Exception) -> DataError:
    """A DataError placing ijson's (yajl's) error at a line and column of the file."""
    lines = str(error).split("\n")
    offset = _locate(reader.chunk, lines[1] if len(lines) > 1 else "")
    if not reader.chunk:
        where = f"the end (byte {reader.pos}): the file is cut short"
    elif offset is None:
        where = f"bytes {reader.chunk_start}-{reader.pos} (from line {reader.lines + 1})"
    else:
        line = reader.lines + reader.chunk.count(b"\n", 0, offset) + 1
        column = offset - reader.chunk.rfind(b"\n", 0, offset)
        # yajl stops just after the token it could not take: "near", not "at"
        where = f"line {line}, column {column} (byte {reader.chunk_start + offset})"
    return DataError(
        f"{path} is not valid JSON: {lines[0]} near {where}. Re-export the chat from Telegram "
        "Desktop (format: JSON), or fix the file there"
    )


def _locate(chunk: bytes, context: str) -> int | None:
    """The error's offset in the chunk, from yajl's context line: 10 spaces (40 - offset when
    offset < 30), then the chunk's bytes around the error with newlines as spaces, the error
    always at column 40. None when it cannot be matched (then the chunk is reported)."""
    if not context.startswith(" " * 10):
        return None
    shown = context[10:].encode("utf-8")  # bytes shown[30] is the error
    flat = chunk.replace(b"\n", b" ").replace(b"\r", b" ")
    for offset in range(min(30, len(flat) + 1)):  # near the chunk's start: padded by spaces
        pad = 30 - offset
        if shown == b" " * pad + flat[: len(shown) - pad]:
            return offset
    start = flat.find(shown)
    return start + 30 if start >= 0 and flat.find(shown, start + 1) < 0 else None


@contextmanager
def _parsing(path: Path, ijson) -> Iterator[CountingReader]:
    """The file opened for ijson; its JSON errors become DataErrors with a position."""
    reader = CountingReader(path, desc=path.name)
    try:
        yield reader
    except ijson.JSONError as e:
        raise _json_error(path, reader, e) from e
    finally:
        reader.close()


def _probe(path: Path, export: _Export, ijson) -> str:
    """Read the top of the file, up to its messages: 'chat' (one chat) or 'account'."""
    with _parsing(path, ijson) as reader:
        events = ijson.parse(reader, use_float=True, buf_size=_BUF)
        for prefix, event, value in events:
            if not prefix and event in _OPEN | _SCALARS and event != "start_map":
                raise DataError(
                    f"{path}: expected a JSON object (a Telegram Desktop export's "
                    f"result.json), found {event.replace('start_', '')} at the top"
                )
            if not prefix and event == "map_key":
                export.top_keys.append(value)
                if value in _LAYOUTS:
                    return _LAYOUTS[value]
            elif prefix in ("id", "name", "type") and event in _SCALARS:
                export.chat[prefix] = value
            elif prefix == _OWNER and event in _SCALARS:
                export.owner = value
    found = ", ".join(repr(k) for k in export.top_keys) or "none"
    raise DataError(
        f"{path} has neither 'messages' (a single-chat export) nor 'chats' (a full-account "
        f"export); its top-level keys: {found}. Is this a Telegram Desktop JSON export?"
    )


def _chat(meta: dict, n: int) -> Chat:
    return Chat(str(meta["id"]) if meta.get("id") is not None else f"chat{n}", meta.get("name"))


def _one_chat(path: Path, export: _Export, ijson) -> Iterator[tuple[Chat, dict]]:
    # the common case, and ijson's C object builder: about 4x faster than the loop below
    chat = _chat(export.chat, 1)
    with _parsing(path, ijson) as reader:
        for message in ijson.items(reader, "messages.item", use_float=True, buf_size=_BUF):
            yield chat, message


def _account(path: Path, ijson) -> Iterator[tuple[Chat, dict]]:
    # chats.list.item = {"name", "type", "id", "messages": [...]}: the chat's fields come
    # first, so events are followed by hand and only messages are built into objects
    meta: dict = {}
    chat: Chat | None = None
    chats = 0
    builder, depth = None, 0
    with _parsing(path, ijson) as reader:
        for prefix, event, value in ijson.parse(reader, use_float=True, buf_size=_BUF):
            if builder is not None:  # inside a message
                builder.event(event, value)
                if event in _OPEN:
                    depth += 1
                elif event in _CLOSE:
                    depth -= 1
                    if depth == 0:
                        yield chat, builder.value
                        builder = None
            elif prefix in _ACCOUNT_MESSAGES and event == "start_map":
                if chat is None:
                    chats += 1
                    chat = _chat(meta, chats)
                builder, depth = ijson.ObjectBuilder(), 1
                builder.event(event, value)
            elif prefix in _ACCOUNT_CHATS and event == "start_map":
                meta, chat = {}, None
            elif prefix in _ACCOUNT_FIELDS and event in _SCALARS:
                meta[_ACCOUNT_FIELDS[prefix]] = value


def stream(path: Path, export: _Export) -> Iterator[tuple[Chat, dict]]:
    """(chat, message) pairs of either export layout, one message object at a time."""
    ijson = require("ijson", extra="train")
    if _probe(path, export, ijson) == "chat":
        yield from _one_chat(path, export, ijson)
    else:
        yield from _account(path, ijson)


# --- one message ---------------------------------------------------------------------------


def text_of(value) -> str:
    """Telegram's `text`: a string, or a list of strings and entities ({"type", "text"})."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            p if isinstance(p, str) else str(p.get("text", "")) if isinstance(p, dict) else ""
            for p in value
        )
    return ""


def media_kind(message: dict) -> str | None:
    kind = message.get("media_type")
    if kind:
        return MEDIA_TYPES.get(kind, "file")
    return next((word for key, word in MEDIA_KEYS.items() if key in message), None)


def _timestamp(message: dict, path: Path) -> float:
    try:
        if message.get("date_unixtime") is not None:
            return float(message["date_unixtime"])
        if message.get("date"):
            return datetime.fromisoformat(message["date"]).timestamp()
    except (TypeError, ValueError) as e:
        raise DataError(
            f"{path}: message {message.get('id')} has an unreadable date "
            f"({message.get('date_unixtime') or message.get('date')!r}: {e})"
        ) from e
    keys = ", ".join(sorted(message))
    raise DataError(
        f"{path}: message {message.get('id')} has no 'date' or 'date_unixtime' (it has: {keys}); "
        "is this a Telegram Desktop JSON export?"
    )


class _Persona:
    def __init__(self, who: str):
        self.ids = {who} | ({f"user{who}", f"channel{who}"} if who.isdigit() else set())
        self.name = who.casefold()

    def __call__(self, sender_id: str, name: str | None) -> bool:
        return sender_id in self.ids or (name is not None and name.casefold() == self.name)


def _senders(senders: Counter, names: dict[str, str | None]) -> str:
    top = [
        f"{names.get(s) or '(no name)'!r} ({s}): {n} message{'s' * (n != 1)}"
        for s, n in senders.most_common(20)
    ]
    more = len(senders) - len(top)
    return "; ".join(top) + (f"; and {more} more" if more > 0 else "") or "none"


# --- sessions and samples ----------------------------------------------------------------------


class _Conversation:
    """One chat's messages in order -> sessions -> samples, emitted as soon as they are
    complete, so a chat with no pause holds one window in memory, not the whole chat."""

    def __init__(self, chat: Chat, config: TelegramConfig, cleaner: Cleaner):
        self.chat, self.config, self.counts = chat, config, cleaner.counts
        self.window: list[tuple[str, list[str]]] = []  # the sample being built: (role, texts)
        self.session: int | None = None  # the current session's number
        self.sessions = 0
        self.last = 0.0
        self.skipping = False  # inside an opening reply that has no prompt
        # recent messages, to follow replies: id -> (session, text if it was a user's)
        self.recent: OrderedDict[int, tuple[int, str | None]] = OrderedDict()

    def add(
        self, role: str, text: str, when: float, msg_id: int | None, reply_to: int | None
    ) -> Iterator[Sample]:
        replied = self.recent.get(reply_to) if reply_to is not None else None
        paused = self.session is not None and when - self.last > self.config.gap_minutes * 60
        held = replied is not None and replied[0] == self.session  # replies hold a session
        if paused and not held:
            yield from self.close()
        if self.session is None:
            self.session, self.sessions = self.sessions, self.sessions + 1
            if role == "assistant":  # the persona opens: with the message it answers, if any
                if replied is not None and replied[1] is not None:
                    self.window.append(("user", [replied[1]]))
                else:
                    self.skipping = True
                    self.counts.drop("no_prompt")
        self.last = when
        if msg_id is not None:
            self.recent[msg_id] = (self.session, text if role == "user" else None)
            if len(self.recent) > REPLY_MEMORY:
                self.recent.popitem(last=False)

        if self.skipping and role == "assistant":
            return
        self.skipping = False
        if self.window and self.window[-1][0] == role:  # one side's messages merge
            self.window[-1][1].append(text)
            return
        # turns alternate, so a full window ends on a reply and the next starts with a user
        if role == "user" and len(self.window) >= self.config.max_turns - 1:
            yield self._sample()
        self.window.append((role, [text]))

    def _sample(self) -> Sample:
        window, self.window = self.window, []
        turns = tuple((role, "\n".join(texts)) for role, texts in window)
        return Sample(turns, f"{self.chat.key}:{self.session}")

    def close(self) -> Iterator[Sample]:
        if self.window and self.window[-1][0] == "user":
            self.counts.drop("no_reply")
            self.window.pop()
        if self.window:
            yield self._sample()
        self.session, self.skipping = None, False


# --- the importer -----------------------------------------------------------------------------


def read(path: Path, config: TelegramConfig, cleaner: Cleaner) -> Iterator[Sample]:
    """Samples of a Telegram Desktop export (see the module docstring for every rule)."""
    path = export_file(path)
    counts = cleaner.counts
    export = _Export()
    senders: Counter = Counter()
    names: dict[str, str | None] = {}
    persona: _Persona | None = None
    resolved = False
    persona_messages = 0
    conversation: _Conversation | None = None
    wanted = set(config.chats)

    for chat, m in stream(path, export):
        counts.read["messages"] += 1
        if not isinstance(m, dict):
            raise DataError(f"{path}: a message must be a JSON object, found {m!r:.60}")
        if conversation is None or conversation.chat is not chat:
            if conversation is not None:
                yield from conversation.close()
            conversation = _Conversation(chat, config, cleaner)
        if wanted and chat.key not in wanted and chat.name not in wanted:
            counts.drop("other_chat")
            continue
        if m.get("type", "message") != "message":
            counts.drop("service")
            continue
        if not resolved:  # a full-account export names its owner before its chats
            who = config.persona or (f"user{export.owner}" if export.owner is not None else None)
            persona, resolved = (_Persona(who) if who else None), True

        sender = str(m.get("from_id") or m.get("from") or "unknown")
        name = m.get("from")
        senders[sender] += 1
        names[sender] = name
        is_persona = persona is not None and persona(sender, name)
        persona_messages += is_persona
        when = _timestamp(m, path)
        forwarded = m.get("forwarded_from")
        if forwarded:
            cleaner.add_name(forwarded)

        raw = text_of(m.get("text"))
        text = cleaner.text(raw) if raw.strip() else ""
        kind = media_kind(m)
        if not text and kind == "sticker" and config.sticker_emoji:
            emoji = cleaner.text(m.get("sticker_emoji") or "")
            if emoji:  # the emoji stands for the sticker
                text, kind = emoji, None
        if not text:
            if kind and config.media == "placeholder":
                text = f"<{kind}>"
            elif kind:
                counts.drop("media")
                continue
            else:
                counts.drop("cleaned_away" if raw.strip() else "empty")
                continue
        elif kind and config.media == "placeholder":
            text = f"<{kind}> {text}"

        role = "assistant" if is_persona and not forwarded else "user"
        yield from conversation.add(role, text, when, m.get("id"), m.get("reply_to_message_id"))

    if conversation is not None:
        yield from conversation.close()
    if not persona_messages:
        if config.persona:
            problem = f"no message in {path} is from persona {config.persona!r}"
        else:
            problem = f"{path} does not say whose account it is, so there is no default persona"
        raise DataError(
            f"{problem}. Senders found: {_senders(senders, names)}. "
            "Pass --persona with one of these names or ids"
        )
