"""Question/answer tables -> one-turn chat samples (user: question, assistant: answer).

Reads parquet (pyarrow, in record batches), jsonl (one object per line) and csv/tsv (with a
header row), like the public `russian_dialogues.parquet` (columns `question`, `answer`).
Column names are options; a missing column is an error that lists the columns there are.
Each row is its own session unless `--session-column` groups rows (a dialogue id, say), so
one group never lands in both train and val. Empty cells drop the row (counted).

Example: `balabol data dialogues --input russian_dialogues.parquet --name qa --question-column question --answer-column answer`
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from balabol.errors import ConfigError, DataError, require
from training.data.clean import Cleaner
from training.data.sample import Sample, open_text, require_file

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

    def __post_init__(self):
        for flag, value in (("--question-column", self.question), ("--answer-column", self.answer)):
            if not value:
                raise ConfigError(f"{flag} must name a column")
        if not isinstance(self.batch_rows, int) or self.batch_rows < 1:
            raise ConfigError(f"batch_rows {self.batch_rows!r}: must be a whole number >= 1")

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


def _delimited(delimiter: str) -> Callable[[Path, DialoguesConfig], Iterator[Row]]:
    def rows(path: Path, config: DialoguesConfig) -> Iterator[Row]:
        # a long answer can pass csv's default 128 KiB field limit
        csv.field_size_limit(max(csv.field_size_limit(), 64 << 20))
        with open_text(path, desc=path.name) as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            names = list(reader.fieldnames or [])
            if any(c not in names for c in config.columns):
                raise _missing(path, config, names)
            try:
                yield from reader
            except csv.Error as e:
                raise DataError(f"{path}: line {reader.line_num} is not valid CSV ({e})") from e

    return rows


FORMATS: dict[str, Callable[[Path, DialoguesConfig], Iterator[Row]]] = {
    ".parquet": _parquet,
    ".jsonl": _jsonl,
    ".csv": _delimited(","),
    ".tsv": _delimited("\t"),
}


def _cell(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def read(path: Path, config: DialoguesConfig, cleaner: Cleaner) -> Iterator[Sample]:
    """One sample per row: [user: question, assistant: answer]."""
    path = require_file(
        path,
        what="dialogue set",
        fix=f"pass a {', '.join(FORMATS)} file with question and answer columns as --input",
    )
    rows = FORMATS.get(path.suffix.lower())
    if rows is None:
        raise DataError(
            f"{path}: cannot read '{path.suffix}' files as a dialogue set; the formats are "
            f"{', '.join(FORMATS)}"
        )
    counts = cleaner.counts
    for n, row in enumerate(rows(path, config), 1):
        counts.read["rows"] += 1
        raw_q, raw_a = _cell(row[config.question]), _cell(row[config.answer])
        if not raw_q.strip() or not raw_a.strip():
            counts.drop("empty")
            continue
        question, answer = cleaner.text(raw_q), cleaner.text(raw_a)
        if not question or not answer:
            counts.drop("cleaned_away")
            continue
        session = _cell(row[config.session]) if config.session else ""
        yield Sample(
            (("user", question), ("assistant", answer)),
            f"{config.session}:{session}" if config.session else f"row:{n}",
        )
