"""Reading a Telegram Desktop JSON export as a stream of (chat, message) pairs: one chat's
`result.json` or a full-account export (`chats.list` and `left_chats.list`), with ijson,
16 KB at a time, so a 500 MB export never becomes 500 MB of Python objects. Also what a
message holds: its text (a string, or strings and entities), its media, its time.

A file that is not such an export is a DataError placing the problem (line, column, byte)
and naming the fix; telegram.py turns the messages into samples.

Example: `balabol data telegram --input ChatExport/result.json --name me --persona "Anna"`
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from balabol.errors import DataError, require
from training.data.sample import CountingReader, require_file

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
_ACCOUNT_FIELDS = {
    f"{chat}.{key}": key for chat in _ACCOUNT_CHATS for key in ("id", "name", "type")
}
_OWNER = "personal_information.user_id"
_OPEN, _CLOSE = frozenset({"start_map", "start_array"}), frozenset({"end_map", "end_array"})
_SCALARS = frozenset({"number", "string", "boolean", "null"})
_BUF = 16 * 1024  # ijson's read size: it parses a whole read at once, so memory scales with it


@dataclass(frozen=True)
class Chat:
    key: str  # its id, or its position in the export
    name: str | None
    type: str | None = None  # "personal_chat", "private_group", "public_channel", ...
    n: int = 1  # its place in the export: the same chat in every pass over the file


@dataclass
class Export:
    """What the stream has told about the export besides messages."""

    top_keys: list[str] = field(default_factory=list)
    layout: str = ""  # "chat" (one chat's result.json) or "account" (a full-account export)
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
    message = error.args[0] if error.args else ""
    # yajl's lexical errors come as bytes: they quote the file's bytes, which may not be UTF-8
    raw = message if isinstance(message, bytes) else str(message).encode("utf-8")
    raw_lines = raw.split(b"\n")
    problem = raw_lines[0].decode("utf-8", "replace")
    offset = _locate(reader.chunk, raw_lines[1] if len(raw_lines) > 1 else b"")
    if not reader.chunk:
        where = f"the end (byte {reader.pos}): the file is cut short"
    elif offset is None:
        where = f"bytes {reader.chunk_start}-{reader.pos} (from line {reader.lines + 1})"
    else:
        line = reader.lines + reader.chunk.count(b"\n", 0, offset) + 1
        column = offset - reader.chunk.rfind(b"\n", 0, offset)
        # yajl stops just after the token it could not take: "near", not "at"
        where = f"line {line}, column {column} (byte {reader.chunk_start + offset})"
    utf16 = reader.chunk_start == 0 and reader.chunk[:2] in (b"\xff\xfe", b"\xfe\xff")
    if utf16 or "invalid bytes in UTF8 string" in problem:
        return DataError(
            f"{path} is not UTF-8 text ({'UTF-16' if utf16 else 'invalid bytes'} near {where}); "
            "Telegram Desktop writes UTF-8: re-export the chat (format: JSON), or save the file "
            "as UTF-8"
        )
    return DataError(
        f"{path} is not valid JSON: {problem} near {where}. Re-export the chat from Telegram "
        "Desktop (format: JSON), or fix the file there"
    )


def _locate(chunk: bytes, context: bytes) -> int | None:
    """The error's offset in the chunk, from yajl's context line: 10 spaces (40 - offset when
    offset < 30), then the chunk's bytes around the error with newlines as spaces, the error
    always at column 40. None when it cannot be matched (then the chunk is reported)."""
    if not context.startswith(b" " * 10):
        return None
    shown = context[10:]  # bytes shown[30] is the error
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
    reader.skip(codecs.BOM_UTF8)  # UTF-8 still, as some editors save it
    try:
        yield reader
    except ijson.JSONError as e:
        raise _json_error(path, reader, e) from e
    finally:
        reader.close()


def _probe(path: Path, export: Export, ijson) -> str:
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
    key = str(meta["id"]) if meta.get("id") is not None else f"chat{n}"
    return Chat(key, meta.get("name"), meta.get("type"), n)


def _one_chat(path: Path, export: Export, ijson) -> Iterator[tuple[Chat, dict]]:
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


def stream(path: Path, export: Export) -> Iterator[tuple[Chat, dict]]:
    """(chat, message) pairs of either export layout, one message object at a time."""
    ijson = require("ijson", extra="train")
    export.layout = _probe(path, export, ijson)
    if export.layout == "chat":
        yield from _one_chat(path, export, ijson)
    else:
        yield from _account(path, ijson)


# --- one message ---------------------------------------------------------------------------


def piece_of(part) -> str:
    """One part of a `text` list: a string, or an entity's text."""
    if isinstance(part, str):
        return part
    return str(part.get("text", "")) if isinstance(part, dict) else ""


def text_of(value) -> str:
    """Telegram's `text`: a string, or a list of strings and entities ({"type", "text"})."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(piece_of(p) for p in value)
    return ""


def media_kind(message: dict) -> str | None:
    kind = message.get("media_type")
    if kind:
        return MEDIA_TYPES.get(kind, "file")
    return next((word for key, word in MEDIA_KEYS.items() if key in message), None)


def timestamp(message: dict, path: Path) -> float:
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
