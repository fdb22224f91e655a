"""Question/answer tables: parquet (in batches), jsonl and csv, configurable columns, and
the errors for bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from balabol.errors import DataError
from tests.training.data import FIXTURES
from training.data.clean import CleanConfig, Cleaner
from training.data.dialogues import DialoguesConfig, read

QA = FIXTURES / "dialogues"


def samples(path: Path, clean: CleanConfig | None = None, **config):
    cleaner = Cleaner(clean)
    out = [(s.session, list(s.messages)) for s in read(path, DialoguesConfig(**config), cleaner)]
    return out, cleaner.counts


JSONL_SAMPLES = [
    ("row:1", [("user", "Как дела?"), ("assistant", "Хорошо, спасибо!")]),
    ("row:2", [("user", "Сколько времени?"), ("assistant", "Сейчас <time>")]),
    ("row:3", [("user", "как дела"), ("assistant", "хорошо спасибо")]),  # duplicates go later
    ("row:4", [("user", "Как дела?"), ("assistant", "Хорошо, спасибо!")]),
    ("row:6", [("user", "Где почитать?"), ("assistant", "<url>")]),
]


def test_jsonl():
    out, counts = samples(QA / "qa.jsonl")
    assert out == JSONL_SAMPLES
    assert counts.read == {"rows": 6}  # the blank line is not a row
    assert counts.dropped == {"empty": 1}
    assert counts.changed == {"dates": 1, "links": 1}


def test_without_placeholders_a_text_can_be_cleaned_away():
    out, counts = samples(QA / "qa.jsonl", CleanConfig(placeholders=False))
    assert [s for s, _ in out] == ["row:1", "row:2", "row:3", "row:4"]
    assert out[1][1][1] == ("assistant", "Сейчас")
    assert counts.dropped == {"empty": 1, "cleaned_away": 1}


def test_csv_with_other_column_names_and_sessions():
    out, counts = samples(QA / "qa.csv", question="q", answer="a", session="dialog")
    assert out == [
        ("dialog:1", [("user", "Привет, бот!"), ("assistant", "Привет!")]),
        ("dialog:1", [("user", "Как тебя зовут?"), ("assistant", "Балабол, а что?")]),
        ("dialog:2", [("user", "Что нового?"), ("assistant", 'Ничего, "всё" по-старому')]),
    ]
    assert counts.read == {"rows": 3}


def test_tsv(tmp_path):
    path = tmp_path / "qa.tsv"
    path.write_text("question\tanswer\nПривет\tЗдравствуй\n", encoding="utf-8")
    out, _ = samples(path)
    assert out == [("row:1", [("user", "Привет"), ("assistant", "Здравствуй")])]


def _parquet(path: Path, rows: int, **extra) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "question": [f"Вопрос {i}?" if i % 5 else None for i in range(rows)],
            "answer": [f"Ответ {i}." for i in range(rows)],
            **extra,
        }
    )
    pq.write_table(table, path, row_group_size=7)
    return path


def test_parquet_in_batches(tmp_path):
    path = _parquet(tmp_path / "russian_dialogues.parquet", 23, relevance=[1] * 23)
    out, counts = samples(path, batch_rows=4)  # batches smaller than row groups
    assert counts.read == {"rows": 23}
    assert counts.dropped == {"empty": 5}  # rows 0, 5, 10, 15, 20 have no question
    assert out[:2] == [
        ("row:2", [("user", "Вопрос 1?"), ("assistant", "Ответ 1.")]),
        ("row:3", [("user", "Вопрос 2?"), ("assistant", "Ответ 2.")]),
    ]
    assert len(out) == 18 and out[-1][0] == "row:23"


# --- bad input ---------------------------------------------------------------------------------


def error(path: Path, **config) -> str:
    with pytest.raises(DataError) as e:
        list(read(path, DialoguesConfig(**config), Cleaner()))
    return str(e.value)


def test_missing_column_lists_the_columns(tmp_path):
    path = _parquet(tmp_path / "qa.parquet", 3)
    assert error(path, answer="reply") == (
        f"{path} has no column 'reply'; its columns: 'question', 'answer'. "
        "Name the right ones with --answer-column"
    )
    assert error(QA / "qa.csv") == (
        f"{QA / 'qa.csv'} has no column 'question', 'answer'; its columns: 'q', 'a', 'dialog'. "
        "Name the right ones with --question-column / --answer-column"
    )
    assert error(QA / "qa.jsonl", session="dialog_id") == (
        f"{QA / 'qa.jsonl'}: line 1 has no column 'dialog_id'; its columns: 'question', "
        "'answer'. Name the right ones with --session-column"
    )


def test_bad_jsonl_line(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(
        '{"question": "a", "answer": "b"}\n{"question": "a", "answer": \n', encoding="utf-8"
    )
    assert error(path) == (
        f"{path}: line 2 is not valid JSON (Expecting value at column 29); each line must be "
        'one object, e.g. {"question": "...", "answer": "..."}'
    )
    path.write_text('["a", "b"]\n', encoding="utf-8")
    assert "line 1 is a JSON list, not an object with 'question', 'answer'" in error(path)


def test_not_parquet(tmp_path):
    path = tmp_path / "qa.parquet"
    shutil.copy(QA / "qa.csv", path)
    assert error(path).startswith(f"{path} is not a readable parquet file (")


def test_unsupported_format_and_missing_file(tmp_path):
    path = tmp_path / "qa.xlsx"
    path.write_bytes(b"PK")
    assert error(path) == (
        f"{path}: cannot read '.xlsx' files as a dialogue set; the formats are "
        ".parquet, .jsonl, .csv, .tsv"
    )
    assert error(tmp_path / "none.jsonl") == (
        f"dialogue set {tmp_path / 'none.jsonl'} does not exist; pass a .parquet, .jsonl, "
        ".csv, .tsv file with question and answer columns as --input"
    )


def test_not_utf8(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_bytes("question,answer\nПривет,Пока\n".encode("cp1251"))
    assert "is not UTF-8 text" in error(path)
