"""Dialogue sets -> chat samples: question/answer tables, and dialogues written as text.

Tables: parquet (pyarrow, in record batches), jsonl (one object per line) and csv/tsv (with
a header row), like the public `russian_dialogues.parquet` (columns `question`, `answer`),
give one-turn samples (user: question, assistant: answer). Column names are options; a
missing column is an error that lists the columns there are. Each row is its own session
unless `--session-column` groups rows (a dialogue id, say), so one group never lands in both
train and val. Empty cells drop the row (counted).

Text (.txt): dialogues of "- " turns separated by blank lines, multi-turn, two speakers
alternating and ending on a reply: a dialogue of an odd number of turns loses its first
(turns.py).

Text files (.txt, .jsonl, .csv, .tsv) may be compressed as .gz or .xz: they are read as they
are decompressed.

Example: `balabol data dialogues --input russian_dialogues.parquet --name qa --question-column question --answer-column answer`
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from balabol.errors import ConfigError, DataError, require
from training.data import turns
from training.data.clean import Cleaner
from training.data.sample import COMPRESSED, Sample, open_text, plain_suffix, require_file

Row = dict  # a row's values by column name


@dataclass(frozen=True)
class DialoguesConfig:
    # The docstrings are the help of `balabol data dialogues`'s flags.
    question: str = "question"
    """the question column"""
    answer: str = "answer"
    """the answer column"""
    session: str | None = None
    """a column grouping rows into sessions (default: each row is one)"""
    batch_rows: int = 10_000
    """parquet rows read at a time"""
    max_turns: int = 8
    """turns per sample of a "- " dialogue text (user and assistant): the context window"""

    def __post_init__(self):
        for flag, value in (("--question-column", self.question), ("--answer-column", self.answer)):
            if not value:
                raise ConfigError(f"{flag} must name a column")
        if not isinstance(self.batch_rows, int) or self.batch_rows < 1:
            raise ConfigError(f"batch_rows {self.batch_rows!r}: must be a whole number >= 1")
        if not isinstance(self.max_turns, int) or self.max_turns < 2:
            raise ConfigError(
                f"--max-turns {self.max_turns!r}: must be a whole number >= 2 "
                "(a sample needs a user turn and a reply)"
            )

    @property
    def columns(self) -> list[str]:
        return [c for c in (self.question, self.answer, self.session) if c]


def _missing(path: Path, config: DialoguesConfig, found: list[str], where: str = "") -> DataError:
    flags = {config.question: "--question-column", config.answer: "--answer-column"}
    if config.session:
        flags[config.session] = "--session-column"
    missing = [c for c in config.columns if c not in found]
    return DataError(
        f"{path}{where} has no column {', '.join(repr(c) for c in missing)}; "
        f"its columns: {', '.join(repr(c) for c in found) or 'none'}. Name the right ones with "
        + " / ".join(flags[c] for c in missing)
    )


def _parquet(path: Path, config: DialoguesConfig) -> Iterator[Row]:
    pq = require("pyarrow.parquet", extra="train")
    from tqdm import tqdm

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for non-parquet files
        raise DataError(f"{path} is not a readable parquet file ({e})") from e
    names = pf.schema_arrow.names
    if any(c not in names for c in config.columns):
        raise _missing(path, config, names)
    with tqdm(total=pf.metadata.num_rows, unit="rows", desc=path.name, disable=None) as bar:
        for batch in pf.iter_batches(batch_size=config.batch_rows, columns=config.columns):
            columns = {c: batch.column(c).to_pylist() for c in config.columns}
            for values in zip(*columns.values(), strict=True):
                yield dict(zip(columns, values, strict=True))
            bar.update(batch.num_rows)


def _jsonl(path: Path, config: DialoguesConfig) -> Iterator[Row]:
    with open_text(path, desc=path.name) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}: line {lineno} is not valid JSON ({e.msg} at column {e.colno}); "
                    "each line must be one object, e.g. "
                    f'{{"{config.question}": "...", "{config.answer}": "..."}}'
                ) from e
            if not isinstance(obj, dict):
                raise DataError(
                    f"{path}: line {lineno} is a JSON {type(obj).__name__}, not an object with "
                    f"{', '.join(repr(c) for c in config.columns)}"
                )
            if any(c not in obj for c in config.columns):
                raise _missing(path, config, list(obj), where=f": line {lineno}")
            yield obj


def _fields(path: Path, line: int, header: int, more: bool) -> DataError:
    return DataError(
        f"{path}: line {line} has {'more' if more else 'fewer'} fields than the header's "
        f"{header}; the file may be cut short, or a field holds the delimiter or a newline "
        'unquoted: quote such fields ("...") or export the table again'
    )


def _delimited(delimiter: str) -> Callable[[Path, DialoguesConfig], Iterator[Row]]:
    def rows(path: Path, config: DialoguesConfig) -> Iterator[Row]:
        # a long answer can pass csv's default 128 KiB field limit
        csv.field_size_limit(max(csv.field_size_limit(), 64 << 20))
        with open_text(path, desc=path.name) as f:
            # strict: a quote left open (a file cut short) is an error, not one huge field
            reader = csv.DictReader(f, delimiter=delimiter, strict=True)
            try:
                names = list(reader.fieldnames or [])
                if any(c not in names for c in config.columns):
                    raise _missing(path, config, names)
                for row in reader:
                    if None in row or None in row.values():  # more fields, or fewer
                        raise _fields(path, reader.reader.line_num, len(names), None in row)
                    yield row
            except csv.Error as e:
                raise DataError(
                    f"{path}: line {reader.reader.line_num} is not valid CSV ({e}); the file may be "
                    "cut short: export it again"
                ) from e

    return rows


FORMATS: dict[str, Callable[[Path, DialoguesConfig], Iterator[Row]]] = {
    ".parquet": _parquet,
    ".jsonl": _jsonl,
    ".csv": _delimited(","),
    ".tsv": _delimited("\t"),
}
TEXT = ".txt"  # "- " dialogues (turns.py)


def _cell(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def read(path: Path, config: DialoguesConfig, cleaner: Cleaner) -> Iterator[Sample]:
    """One sample per row of a table, or per window of a "- " dialogue text."""
    names = ", ".join([*FORMATS, TEXT])
    path = require_file(
        path,
        what="dialogue set",
        fix=f"pass a {names} file (tables with question and answer columns; .txt with "
        '"- " dialogues) as --input',
    )
    suffix = plain_suffix(path)
    compressed = path.suffix.lower() in COMPRESSED
    if suffix == TEXT:
        yield from turns.read(path, config.max_turns, cleaner)
        return
    rows = FORMATS.get(suffix)
    if rows is None or (compressed and rows is _parquet):
        shown = "".join(path.suffixes[-2:]) if compressed else path.suffix
        raise DataError(
            f"{path}: cannot read '{shown}' files as a dialogue set; the formats are "
            f"{names} (text ones also as .gz or .xz)"
        )
    counts = cleaner.counts
    for n, row in enumerate(rows(path, config), 1):
        counts.read["rows"] += 1
        question, why = cleaner.clean(_cell(row[config.question]), reply=False)
        if not why:
            answer, why = cleaner.clean(_cell(row[config.answer]))
        if why:
            counts.drop(why)
            continue
        session = _cell(row[config.session]) if config.session else ""
        yield Sample(
            (("user", question), ("assistant", answer)),
            f"{config.session}:{session}" if config.session else f"row:{n}",
        )
