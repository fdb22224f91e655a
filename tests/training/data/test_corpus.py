"""The plain corpus: one entry per line or blank-line separated, fixed and topic prompts,
and unconditional samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from balabol.errors import ConfigError, DataError
from tests.training.data import FIXTURES
from training.data.clean import Cleaner
from training.data.corpus import CorpusConfig, read

CORPUS = FIXTURES / "corpus"


def samples(path: Path, **config):
    cleaner = Cleaner()
    out = [(s.session, list(s.messages)) for s in read(path, CorpusConfig(**config), cleaner)]
    return out, cleaner.counts


def test_one_per_line():
    out, counts = samples(CORPUS / "jokes.txt")
    assert out == [
        ("entry:1", [("user", "Tell me a joke."), ("assistant", "Колобок повесился.")]),
        (
            "entry:2",
            [
                ("user", "Tell me a joke."),
                ("assistant", "Встречаются как-то русский, немец и американец."),
            ],
        ),
        ("entry:3", [("user", "Tell me a joke."), ("assistant", "Колобок повесился.")]),
    ]
    assert counts.read == {"entries": 3}


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


def test_bad_input(tmp_path):
    with pytest.raises(
        DataError, match=r"corpus .*nope\.txt does not exist; pass a UTF-8 text file"
    ):
        list(read(tmp_path / "nope.txt", CorpusConfig(), Cleaner()))
    with pytest.raises(ConfigError, match="--separator 'para': must be one of line, blank"):
        CorpusConfig(separator="para")
