"""Question/answer tables: parquet (in batches), jsonl and csv, configurable columns; "- "
dialogue text (a real excerpt, compressed too, multi-turn windows); and the errors for bad
files of every format."""

from __future__ import annotations

import gzip
import lzma
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
    ("row:2", [("user", "Сколько времени?"), ("assistant", "Сейчас 10:30")]),  # content
    ("row:3", [("user", "как дела"), ("assistant", "хорошо спасибо")]),  # duplicates go later
    ("row:4", [("user", "Как дела?"), ("assistant", "Хорошо, спасибо!")]),
    # row 6's answer was only a link: "<url>" is no answer to learn
]


def test_jsonl():
    out, counts = samples(QA / "qa.jsonl")
    assert out == JSONL_SAMPLES
    assert counts.read == {"rows": 6}  # the blank line is not a row
    assert counts.dropped == {"empty": 1, "mostly_replaced": 1}
    assert counts.changed == {"links": 1}


def test_without_placeholders_a_text_can_be_cleaned_away():
    clean = CleanConfig.from_flags(on=["dates"], placeholders=False)
    out, counts = samples(QA / "qa.jsonl", clean)
    assert [s for s, _ in out] == ["row:1", "row:2", "row:3", "row:4"]
    assert out[1][1][1] == ("assistant", "Сейчас")  # one word of two replaced: kept
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


# --- "- " dialogue text -------------------------------------------------------------------------

KOZIEV = QA / "koziev_anekdot_dialogues_excerpt.txt"  # CC0: see tests/fixtures/README.md


def test_dialogue_text_from_the_real_corpus():
    out, counts = samples(KOZIEV)
    assert out[:3] == [
        (
            "dialogue:1",
            [
                ("user", "Как водичка ?"),
                ("assistant", "А я здесь как женшина сижу, а не как термометр."),
            ],
        ),
        (
            "dialogue:2",
            [
                ("user", "Я затрудняюсь поставить вам диагноз ... Наверное, это алкоголизм."),
                ("assistant", "Хорошо, доктор. Я приду, когда Вы будете трезвым."),
            ],
        ),
        (
            "dialogue:3",
            [
                ("user", "Что такое дефицит в маркистском понимании?"),
                ("assistant", "Это объективная реальность, не данная нам в ощущениях."),
                ("user", "Это вы в идеалистическом понимании, а в практическом?"),
                ("assistant", "Объективная реальность данная в ощущениях, но не нам."),
            ],
        ),
    ]
    # "- Где мы? / - В Париже, мсье... / - К черту подробности!": three turns, so the first is
    # dropped and the punchline is the reply
    assert out[5] == (
        "dialogue:6",
        [
            ("user", "В Париже, мсье - отвечает шофер."),
            ("assistant", "К черту подробности! В какой стране?"),
        ],
    )
    assert counts.read == {"dialogues": 42, "turns": 143}
    assert counts.dropped == {"odd_first_turn": 11}
    assert len(out) == 43  # dialogue 9's 12 turns are two windows of --max-turns 8
    assert [len(msgs) for session, msgs in out if session == "dialogue:9"] == [8, 4]


@pytest.mark.parametrize(("suffix", "compress"), [(".xz", lzma.compress), (".gz", gzip.compress)])
def test_dialogue_text_compressed(tmp_path, suffix, compress):
    path = tmp_path / f"dialogues.txt{suffix}"
    path.write_bytes(compress(KOZIEV.read_bytes()))
    assert samples(path) == samples(KOZIEV)


def _dialogues(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dialogues.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_dialogue_windows_keep_the_turns_before_each_reply(tmp_path):
    path = _dialogues(tmp_path, "".join(f"- Реплика {i}\n" for i in range(1, 8)))
    out, counts = samples(path, max_turns=4)
    assert out == [
        ("dialogue:1", [("user", "Реплика 2"), ("assistant", "Реплика 3"),
                        ("user", "Реплика 4"), ("assistant", "Реплика 5")]),
        ("dialogue:1", [("user", "Реплика 6"), ("assistant", "Реплика 7")]),
    ]  # fmt: skip
    assert counts.dropped == {"odd_first_turn": 1}  # Реплика 1


def test_an_odd_dialogue_loses_its_first_turn_and_ends_on_a_reply(tmp_path):
    path = _dialogues(
        tmp_path,
        "- Один\n\n"  # a single turn: nothing to learn
        "- Где мы?\n- В Париже.\n- К черту подробности!\n\n"
        "- Раз\n- Два\n- Три\n- Четыре\n",  # even: as it is
    )
    out, counts = samples(path)
    assert out == [
        ("dialogue:2", [("user", "В Париже."), ("assistant", "К черту подробности!")]),
        ("dialogue:3", [("user", "Раз"), ("assistant", "Два"),
                        ("user", "Три"), ("assistant", "Четыре")]),
    ]  # fmt: skip
    assert counts.read == {"dialogues": 3, "turns": 8}
    assert counts.dropped == {"odd_first_turn": 2}
    assert all(msgs[-1][0] == "assistant" for _, msgs in out)


def test_dialogue_text_shapes(tmp_path):
    path = _dialogues(
        tmp_path,
        "Муж приходит домой:\r\n"  # a narrator's line before the first turn
        "— Дорогая, я дома!\r\n"  # an em dash
        "– Вижу.\r\n"  # an en dash
        "А ужин?\r\n"  # no dash: the turn goes on
        "\r\n"  # one blank line is enough between dialogues
        "-Без пробела не реплика\n"
        "- Привет\n- Пока\n",
    )
    out, counts = samples(path)
    assert out == [
        ("dialogue:1", [("user", "Дорогая, я дома!"), ("assistant", "Вижу.\nА ужин?")]),
        ("dialogue:2", [("user", "Привет"), ("assistant", "Пока")]),
    ]
    assert counts.dropped == {"not_a_turn": 2}


def test_a_dropped_turn_ends_its_dialogue(tmp_path):
    path = _dialogues(
        tmp_path,
        "- Где почитать?\n- https://example.com/a\n- Спасибо\n- Пожалуйста\n\n"
        "- Ну?\n- Да\n-\n- Нет\n\n"
        "- Кто там?\n- Я\n- https://example.com/b\n",  # odd, then a reply cleaned away
    )
    out, counts = samples(path)
    # a reply that was only a link, and an empty turn: who speaks after them is lost, and a
    # user turn left last has no reply
    assert out == [("dialogue:2", [("user", "Ну?"), ("assistant", "Да")])]
    assert counts.dropped == {
        "mostly_replaced": 2, "cut_off": 3, "no_reply": 2, "empty": 1, "odd_first_turn": 1,
    }  # fmt: skip


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
        ".parquet, .jsonl, .csv, .tsv, .txt (text ones also as .gz or .xz)"
    )
    path = tmp_path / "qa.parquet.gz"
    path.write_bytes(gzip.compress(b"PAR1"))
    assert "cannot read '.parquet.gz' files as a dialogue set" in error(path)
    assert error(tmp_path / "none.jsonl") == (
        f"dialogue set {tmp_path / 'none.jsonl'} does not exist; pass a .parquet, .jsonl, "
        '.csv, .tsv, .txt file (tables with question and answer columns; .txt with "- " '
        "dialogues) as --input"
    )


def test_not_utf8(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_bytes("question,answer\nПривет,Пока\n".encode("cp1251"))
    assert "is not UTF-8 text" in error(path)


def test_dialogue_text_without_turns(tmp_path):
    path = _dialogues(tmp_path, "Колобок повесился.\n\nШтирлиц шёл по коридору.\n")
    assert error(path) == (
        f"{path} has no turns: no line starts with '- '. A dialogue text has one turn per line "
        "after a dash and blank lines between dialogues; for plain texts (one per line or "
        "block) use `balabol data corpus`"
    )


@pytest.mark.parametrize(
    "name", ["qa.txt", "qa.jsonl", "qa.csv", "qa.tsv", "qa.parquet", "qa.txt.xz"]
)
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    assert error(path).startswith(f"dialogue set {path} is empty (0 bytes); pass a .parquet")


@pytest.mark.parametrize("name", ["d.txt", "d.txt.gz", "qa.jsonl.xz"])
def test_not_utf8_text_plain_or_compressed(tmp_path, name):
    data = '{"question": "Привет", "answer": "Пока"}\n- Привет\n'.encode("cp1251")
    path = tmp_path / name
    path.write_bytes(
        gzip.compress(data)
        if name.endswith(".gz")
        else lzma.compress(data)
        if name.endswith(".xz")
        else data
    )
    assert "is not UTF-8 text (near byte" in error(path)


@pytest.mark.parametrize("name", ["d.txt.xz", "qa.jsonl.gz"])
def test_cut_short_compressed(tmp_path, name):
    data = ("- Привет\n- Пока\n\n" * 500).encode("utf-8")
    data = gzip.compress(data) if name.endswith(".gz") else lzma.compress(data)
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    assert error(path).startswith(f"{path} is cut short: the compressed data ends at byte")


def test_cut_short_csv(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('question,answer\nПривет,"Пока, до\nзавтра', encoding="utf-8")
    assert error(path) == (
        f"{path}: line 3 is not valid CSV (unexpected end of data); the file may be cut short: "
        "export it again"
    )
    path.write_text("question,answer\nПривет,Пока\nКак дела\n", encoding="utf-8")
    assert error(path) == (
        f"{path}: line 3 has fewer fields than the header's 2; the file may be cut short, or a "
        'field holds the delimiter or a newline unquoted: quote such fields ("...") or export '
        "the table again"
    )
    path.write_text("question,answer\nПривет,Пока, до завтра\n", encoding="utf-8")
    assert "line 2 has more fields than the header's 2" in error(path)


def test_cut_short_parquet(tmp_path):
    path = _parquet(tmp_path / "qa.parquet", 50)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert error(path).startswith(f"{path} is not a readable parquet file (")


def test_cut_short_jsonl(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "a", "answer": "b"}\n{"question": "Прив', encoding="utf-8")
    assert error(path).startswith(f"{path}: line 2 is not valid JSON (Unterminated string")
