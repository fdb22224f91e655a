"""What every importer yields (`Sample`: chat messages and a session id) and what every
stage counts (`Counts`: units read, samples and messages dropped by reason, texts changed,
notes for the summary), and how importers open their input (`require_file`, `open_text`:
UTF-8, plain or compressed as .gz/.xz, with errors that say what is wrong and the fix).

Example: `balabol data corpus --input jokes.txt --name jokes` prints these counts as a table.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from balabol.errors import DataError

# Why something was dropped, and what unit the count is in: data, so the table, stats.json
# and the "empty after cleaning" error all say the same thing.
REASONS: dict[str, str] = {
    "service": "messages: Telegram service messages (joins, pins, calls)",
    "media": "messages: media without text (--media placeholder keeps them)",
    "empty": "messages/rows/entries with no text at all",
    "cleaned_away": "messages/rows/entries whose text was all removed by cleaning steps",
    "mostly_replaced": "replies: cleaning replaced or removed most of their words (a reply that was only a date or a link)",
    "other_chat": "messages: chats not selected with --chat",
    "no_prompt": "turns: the persona spoke first in a session, with no message to answer",
    "no_reply": "turns: messages the persona never answered",
    "not_persona": "messages: others' messages in a chat read as the persona's posts",
    "odd_first_turn": "turns: the first of a dialogue of an odd number of '- ' turns, so that it ends on a reply",
    "cut_off": "turns: after a dropped turn of a two-speaker dialogue (who speaks is lost)",
    "not_a_turn": "lines: text before a dialogue's first '- ' turn (a narrator's words)",
    "no_topic": "entries: no 'topic<TAB>' prefix while --prompt has {topic}",
    "too_short": "samples: replies shorter than --min-chars",
    "too_long": "samples: replies longer than --max-chars",
    "duplicate": "samples: exact repeats of an earlier sample",
    "near_duplicate": "samples: repeats once case, punctuation, spaces and ё/е are ignored",
}


@dataclass(frozen=True)
class Sample:
    """One training conversation: (role, content) turns, and the session it came from."""

    messages: tuple[tuple[str, str], ...]
    session: str

    def to_json(self) -> dict:
        return {
            "messages": [{"role": r, "content": c} for r, c in self.messages],
            "session": self.session,
        }

    @property
    def reply_chars(self) -> int:
        """Characters the model learns to write: the assistant turns."""
        return sum(len(c) for r, c in self.messages if r == "assistant")


@dataclass
class Counts:
    read: Counter = field(default_factory=Counter)  # unit ("messages", "rows", ...) -> n
    dropped: Counter = field(default_factory=Counter)  # reason (see REASONS) -> n
    changed: Counter = field(default_factory=Counter)  # cleaning step -> replacements made
    notes: list[str] = field(default_factory=list)  # what the summary should say it decided

    def drop(self, reason: str, n: int = 1) -> None:
        assert reason in REASONS, reason
        self.dropped[reason] += n


def require_file(path: Path, *, what: str, fix: str) -> Path:
    """The path as a non-empty file, or a DataError saying what is wrong and how to fix it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} {path} does not exist; {fix}")
    if not path.is_file():
        raise DataError(f"{what} {path} is a directory, not a file; {fix}")
    if path.stat().st_size == 0:
        raise DataError(f"{what} {path} is empty (0 bytes); {fix}")
    return path


# How a compressed file is opened, by its last suffix: `jokes.txt.xz` is read as `jokes.txt`.
COMPRESSED = {".gz": gzip.open, ".xz": lzma.open}
_BAD_COMPRESSED = (gzip.BadGzipFile, zlib.error, lzma.LZMAError)


def plain_suffix(path: Path) -> str:
    """The suffix that says the format, under a compression suffix: '.txt' for x.txt.xz."""
    path = Path(path)
    if path.suffix.lower() in COMPRESSED:
        path = path.with_suffix("")
    return path.suffix.lower()


class CountingReader(io.RawIOBase):
    """A binary file that remembers how far it has been read (bytes, newlines, the last
    chunk), so a streaming parser's error can be placed, and drives a progress bar."""

    def __init__(self, path: Path, *, desc: str):
        from tqdm import tqdm

        self._f = open(path, "rb")  # noqa: SIM115 (closed by close())
        self.pos = 0  # bytes read so far
        self.lines = 0  # newlines before the last chunk
        self.chunk = b""  # the last chunk read, and where it starts
        self.chunk_start = 0
        # disable=None: a bar on a terminal only, nothing in logs and tests
        self._bar = tqdm(
            total=os.path.getsize(path), unit="B", unit_scale=True, desc=desc, disable=None
        )

    def readable(self) -> bool:
        return True

    def skip(self, prefix: bytes) -> None:
        """Read past `prefix` (a byte-order mark, say) if the file starts with it."""
        if self.pos == 0 and self._f.peek(len(prefix))[: len(prefix)] == prefix:
            self._seen(self._f.read(len(prefix)))

    def _seen(self, chunk: bytes) -> None:
        self.lines += self.chunk.count(b"\n")
        self.chunk, self.chunk_start = chunk, self.pos
        self.pos += len(chunk)
        self._bar.update(len(chunk))

    def read(self, size: int = -1) -> bytes:
        chunk = self._f.read(size)
        self._seen(chunk)
        return chunk

    def readinto(self, buffer) -> int:
        n = self._f.readinto(buffer)
        self._seen(bytes(memoryview(buffer)[:n]))
        return n

    def close(self) -> None:
        if not self.closed:
            self._f.close()
            self._bar.close()
        super().close()


@contextmanager
def open_text(path: Path, *, desc: str) -> Iterator[io.TextIOWrapper]:
    """A UTF-8 text stream over a CountingReader (progress bar included), decompressed as it
    is read when the name ends in .gz or .xz; a BOM is skipped."""
    raw = CountingReader(path, desc=desc)
    binary: io.BufferedIOBase = io.BufferedReader(raw)
    compressed = COMPRESSED.get(Path(path).suffix.lower())
    if compressed is not None:
        binary = compressed(binary, "rb")  # does not close what it reads: raw is closed below
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
    try:
        yield text
    except UnicodeDecodeError as e:
        where = f"byte {raw.pos}" + (" of the compressed file" if compressed else "")
        raise DataError(
            f"{path} is not UTF-8 text (near {where}: {e.reason}); save it as UTF-8 and run again"
        ) from e
    except EOFError as e:  # the compressed stream ends before its end marker
        raise DataError(
            f"{path} is cut short: the compressed data ends at byte {raw.pos} before its end "
            "marker; copy or download the file again"
        ) from e
    except _BAD_COMPRESSED as e:
        raise DataError(
            f"{path} is not a valid {Path(path).suffix} file ({e}); pass the file as it was "
            "compressed, or decompress it and pass the text"
        ) from e
    finally:
        text.close()
        raw.close()
