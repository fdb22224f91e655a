"""Chat samples: one line of `data/NAME/{train,val}.jsonl` each, read and checked.

A line is `{"messages": [{"role": "user", "content": "..."}, ...], "session": "<id>"}`.
Training reads them to learn from, `balabol eval` (runtime/evaluate.py) to score a model on;
a bad line is a DataError naming the file and the line.

Example: `balabol eval --data data/me` reads data/me/val.jsonl through this.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from balabol.errors import ConfigError, DataError
from balabol.prompt import validate_messages

TRAIN_FILE = "train.jsonl"
VAL_FILE = "val.jsonl"


@dataclass(frozen=True)
class Sample:
    messages: tuple[dict[str, str], ...]
    session: str | None
    where: str  # "path:line", for error messages


def data_files(data: Path) -> tuple[Path, Path]:
    """(train.jsonl, val.jsonl) of a data directory, or a DataError saying how to make one."""
    data = Path(data)
    if not data.is_dir():
        problem = "is a file, not a directory" if data.exists() else "does not exist"
        raise DataError(
            f"data directory {data} {problem}; build one with `balabol data ...` "
            f"(it writes {TRAIN_FILE} and {VAL_FILE}) and pass it as --data"
        )
    train, val = data / TRAIN_FILE, data / VAL_FILE
    for path in (train, val):
        if not path.is_file():
            present = ", ".join(sorted(p.name for p in data.iterdir())) or "nothing"
            raise DataError(
                f"{data} has no {path.name} (it has: {present}); `balabol data ...` writes "
                f"{TRAIN_FILE} and {VAL_FILE}"
            )
    return train, val


def read_jsonl(path: Path) -> Iterator[Sample]:
    """Samples of one jsonl file, streamed; a bad line is a DataError naming file and line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{where}: not valid JSON ({e.msg}, column {e.colno}); each line must be "
                    '{"messages": [{"role": ..., "content": ...}, ...], "session": ...}'
                ) from e
            messages = obj.get("messages") if isinstance(obj, dict) else None
            if (
                not isinstance(messages, list)
                or not messages
                or not all(isinstance(m, Mapping) for m in messages)
            ):
                raise DataError(
                    f"{where}: expected an object with a non-empty list of messages, "
                    f'{{"messages": [{{"role": "user", "content": "..."}}, ...]}}; got {line.strip()[:80]!r}'
                )
            try:
                msgs = validate_messages(messages)
            except ConfigError as e:
                raise DataError(f"{where}: {e}") from e
            session = obj.get("session")
            yield Sample(tuple(msgs), None if session is None else str(session), where)
