"""The plain corpus: one entry per line, blank-line separated (by the file's usual gap), or
separated by a line of its own / a regex; fixed and topic prompts, unconditional samples,
compressed files, and bad input."""

from __future__ import annotations

import gzip
import lzma
from collections import Counter
from pathlib import Path

import pytest

from balabol.errors import ConfigError, DataError
from tests.training.data import FIXTURES
from training.data.clean import Cleaner
from training.data.corpus import CorpusConfig, read, usual_gap
from training.data.sample import open_text

CORPUS = FIXTURES / "corpus"
RUSSIAN = (
    "each entry became [user: 'Расскажи анекдот.', assistant: the entry]: the corpus is in "
    'Russian; --prompt sets another prompt ("" for none)'
)


def samples(path: Path, **config):
    cleaner = Cleaner()
    out = [(s.session, list(s.messages)) for s in read(path, CorpusConfig(**config), cleaner)]
    return out, cleaner.counts


def replies(path: Path, **config) -> list[str]:
    return [msgs[-1][1] for _, msgs in samples(path, **config)[0]]


def _write(tmp_path: Path, text: str, name: str = "jokes.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_one_per_line_after_a_prompt_in_the_corpus_language():
    out, counts = samples(CORPUS / "jokes.txt")
    assert out == [
        ("entry:1", [("user", "Расскажи анекдот."), ("assistant", "Колобок повесился.")]),
        (
            "entry:2",
            [
                ("user", "Расскажи анекдот."),
                ("assistant", "Встречаются как-то русский, немец и американец."),
            ],
        ),
        ("entry:3", [("user", "Расскажи анекдот."), ("assistant", "Колобок повесился.")]),
    ]
    assert counts.read == {"entries": 3}
    assert counts.notes == [RUSSIAN]


def test_an_english_corpus_gets_an_english_prompt(tmp_path):
    # a few Russian words do not make an English corpus Russian: most letters decide
    path = _write(tmp_path, "Why did the chicken cross the road?\nБорщ is a soup, not a joke.\n")
    out, counts = samples(path)
    assert {msgs[0] for _, msgs in out} == {("user", "Tell me a joke.")}
    assert counts.notes == [
        "each entry became [user: 'Tell me a joke.', assistant: the entry]: the corpus is in "
        'English; --prompt sets another prompt ("" for none)'
    ]


def test_a_given_prompt_is_not_noted():
    _, counts = samples(CORPUS / "jokes.txt", prompt="Tell me a joke.")
    assert not counts.notes


def test_the_language_and_the_gaps_are_counted_in_one_pre_pass(monkeypatch):
    from training.data import corpus

    opened = []

    def counting(path, **kwargs):
        opened.append(kwargs["desc"])
        return open_text(path, **kwargs)

    monkeypatch.setattr(corpus, "open_text", counting)
    _, counts = samples(CORPUS / "jokes_blank.txt", separator="blank")
    assert opened == ["jokes_blank.txt (survey)", "jokes_blank.txt"]
    assert counts.notes[-1] == RUSSIAN
    opened.clear()
    samples(CORPUS / "jokes.txt", prompt="Расскажи анекдот.")
    assert opened == ["jokes.txt"]  # nothing to survey


def test_blank_line_separated_with_a_prompt():
    out, _ = samples(CORPUS / "jokes_blank.txt", separator="blank", prompt="Расскажи анекдот")
    assert out == [
        (
            "entry:1",
            [("user", "Расскажи анекдот"), ("assistant", "— Доктор, я буду жить?\n— А смысл?")],
        ),
        (
            "entry:2",
            [
                ("user", "Расскажи анекдот"),
                ("assistant", "Штирлиц шёл по коридору.\nКоридор был длинный."),
            ],
        ),
        ("entry:3", [("user", "Расскажи анекдот"), ("assistant", "Короткий анекдот.")]),
    ]


def test_blank_in_a_file_of_single_gaps_splits_and_says_so():
    _, counts = samples(CORPUS / "jokes_blank.txt", separator="blank")
    assert counts.notes == [
        "--separator blank: every blank line ends an entry (the usual gap in this file is one "
        "blank line), so an entry with a blank line inside is split in two; to keep such "
        "entries whole, separate entries by a line of their own (--separator '---') or by two "
        "blank lines",
        RUSSIAN,
    ]


def test_blank_keeps_blank_lines_inside_entries_when_entries_end_at_longer_gaps(tmp_path):
    path = _write(
        tmp_path,
        "\n— Доктор, я буду жить?\n\n— А смысл?\n\n\n"
        "Штирлиц шёл по коридору.\n\n\n\nКоридор был длинный.\n\n\n"
        "Короткий анекдот.\n\n",
    )
    out, counts = samples(path, separator="blank")
    assert [msgs[-1][1] for _, msgs in out] == [
        "— Доктор, я буду жить?\n\n— А смысл?",
        "Штирлиц шёл по коридору.",
        "Коридор был длинный.",
        "Короткий анекдот.",
    ]
    assert counts.notes == [
        "--separator blank: entries end at 2 or more blank lines in a row, the usual gap in "
        "this file; 1 shorter gap stayed inside entries",
        RUSSIAN,
    ]


@pytest.mark.parametrize(
    ("runs", "gap"),
    [
        ({}, 1),
        ({1: 2048}, 1),
        ({1: 163, 2: 1886}, 2),  # jokes end at two blank lines; 163 hold a single one
        ({1: 2000, 2: 5}, 1),  # a few double gaps by accident
        ({1: 1, 2: 1}, 1),  # no majority: the safe reading, one blank line
        ({3: 87_719}, 3),
        ({1: 100, 2: 1000, 3: 900}, 2),
    ],
)
def test_usual_gap(runs, gap):
    assert usual_gap(Counter(runs)) == gap


def test_a_separator_line_keeps_blank_lines_inside_entries(tmp_path):
    path = _write(
        tmp_path,
        "---\n— Доктор, я буду жить?\n\n— А смысл?\n  ---  \n---\nКороткий анекдот.\n---\n",
    )
    out, counts = samples(path, separator="---")
    assert [msgs[-1][1] for _, msgs in out] == [
        "— Доктор, я буду жить?\n\n— А смысл?",
        "Короткий анекдот.",
    ]
    assert counts.read == {"entries": 2} and counts.notes == [RUSSIAN]


def test_a_regex_separator(tmp_path):
    path = _write(tmp_path, "Первый.\n=====\nВторой,\n\nв две строки.\n===\nТретий.\n")
    assert replies(path, separator="/={3,}/") == ["Первый.", "Второй,\n\nв две строки.", "Третий."]


def test_a_separator_that_never_comes_is_noted(tmp_path):
    path = _write(tmp_path, "Первый.\nВторой.\n")
    out, counts = samples(path, separator="%")
    assert [msgs[-1][1] for _, msgs in out] == ["Первый.\nВторой."]
    assert counts.notes == [
        "no line is the separator '%': the whole file was read as one entry; check --separator",
        RUSSIAN,
    ]


@pytest.mark.parametrize(("suffix", "compress"), [(".xz", lzma.compress), (".gz", gzip.compress)])
def test_compressed_corpus(tmp_path, suffix, compress):
    path = tmp_path / f"jokes.txt{suffix}"
    path.write_bytes(compress((CORPUS / "jokes_blank.txt").read_bytes()))
    assert samples(path, separator="blank") == samples(
        CORPUS / "jokes_blank.txt", separator="blank"
    )


def test_topic_prompts():
    out, counts = samples(CORPUS / "jokes_topics.txt", prompt="Расскажи анекдот про {topic}")
    assert out == [
        (
            "entry:1",
            [("user", "Расскажи анекдот про кошки"), ("assistant", "Кот учёный ходит по цепи.")],
        ),
        (
            "entry:2",
            [
                ("user", "Расскажи анекдот про программисты"),
                ("assistant", "Как программист моет посуду? Никак: это не баг."),
            ],
        ),
    ]
    assert counts.dropped == {"no_topic": 1}


def test_unconditional():
    out, _ = samples(CORPUS / "jokes.txt", prompt="")
    assert out[0] == ("entry:1", [("assistant", "Колобок повесился.")])


def error(path: Path, **config) -> str:
    with pytest.raises(DataError) as e:
        list(read(path, CorpusConfig(**config), Cleaner()))
    return str(e.value)


def test_empty_file(tmp_path):
    path = _write(tmp_path, "")
    assert error(path) == (
        f"corpus {path} is empty (0 bytes); pass a UTF-8 text file, one entry per line (or "
        "separated with --separator blank, '---' or /REGEX/), as --input"
    )


@pytest.mark.parametrize("separator", ["line", "blank", "---"])
def test_not_utf8(tmp_path, separator):
    path = tmp_path / "jokes.txt"
    path.write_bytes("Колобок повесился.\n".encode("cp1251"))
    assert error(path, separator=separator) == (
        f"{path} is not UTF-8 text (near byte 19: invalid continuation byte); save it as UTF-8 "
        "and run again"
    )


def test_cut_short_or_corrupt_compressed_file(tmp_path):
    data = lzma.compress(("Колобок повесился.\n" * 200).encode("utf-8"))
    path = tmp_path / "jokes.txt.xz"
    path.write_bytes(data[: len(data) // 2])
    assert error(path).startswith(
        f"{path} is cut short: the compressed data ends at byte {len(data) // 2} before its end "
        "marker; copy or download the file again"
    )
    path = tmp_path / "jokes.txt.gz"
    path.write_bytes(b"not gzip at all")
    assert error(path).startswith(f"{path} is not a valid .gz file (")


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("result.json", "balabol data telegram (a Telegram Desktop export)"),
        ("qa.csv", "balabol data dialogues (question/answer rows)"),
        ("qa.jsonl.gz", "balabol data dialogues (question/answer rows)"),
    ],
)
def test_another_importers_file_is_refused(tmp_path, name, command):
    path = tmp_path / name
    path.write_bytes(b"{}")
    suffix = ".jsonl" if name.endswith(".gz") else path.suffix
    assert error(path) == (
        f"{path}: a {suffix} file is not a plain-text corpus; read it with {command}, or pass "
        "a .txt file with one entry per line"
    )


def test_bad_input(tmp_path):
    with pytest.raises(
        DataError, match=r"corpus .*nope\.txt does not exist; pass a UTF-8 text file"
    ):
        list(read(tmp_path / "nope.txt", CorpusConfig(), Cleaner()))
    with pytest.raises(ConfigError, match=r"--separator ' ': give line, blank, a separator line"):
        CorpusConfig(separator=" ")
    with pytest.raises(ConfigError, match=r"--separator '/\[/': not a regular expression"):
        CorpusConfig(separator="/[/")
