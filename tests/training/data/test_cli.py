"""`balabol data`: the typed signature is the CLI; it writes data/NAME and prints the table;
mistakes are one-line errors, never tracebacks."""

from __future__ import annotations

import json

import pytest

from balabol.cli import main
from tests.training.data import FIXTURES

GROUP = FIXTURES / "telegram" / "group_chat.json"


def test_telegram_end_to_end(tmp_path, capsys):
    code = main(
        ["data", "telegram", "--input", str(GROUP), "--name", "friends",
         "--out-dir", str(tmp_path), "--persona", "Аня", "--no-links", "--emoji",
         "--max-turns", "2", "--chat", "Друзья"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path / 'friends'}: train.jsonl, val.jsonl, stats.json\n")
    assert "  kept samples            4  train " in out
    stats = json.loads((tmp_path / "friends" / "stats.json").read_text(encoding="utf-8"))
    assert stats["source"] == "telegram" and stats["input"] == str(GROUP)
    config = stats["config"]
    assert "links" not in config["steps"] and "emoji" in config["steps"]
    assert (config["persona"], config["max_turns"], config["chats"]) == ("Аня", 2, ["Друзья"])
    written = [
        json.loads(line)
        for name in ("train.jsonl", "val.jsonl")
        for line in (tmp_path / "friends" / name).read_text(encoding="utf-8").splitlines()
    ]
    replies = sorted(
        m["content"] for s in written for m in s["messages"] if m["role"] == "assistant"
    )
    assert replies[-1] == "Я иду! Пиши <user>\nБилеты тут: https://kino.ru/tickets"  # --no-links


def test_default_root_is_balabol_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BALABOL_DATA", str(tmp_path / "datasets"))
    jokes = FIXTURES / "corpus" / "jokes_blank.txt"
    assert (
        main(["data", "corpus", "--input", str(jokes), "--name", "jokes", "--separator", "blank"])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "datasets" / "jokes").iterdir()) == [
        "stats.json",
        "train.jsonl",
        "val.jsonl",
    ]


def test_dialogues(tmp_path, capsys):
    qa = FIXTURES / "dialogues" / "qa.csv"
    args = ["data", "dialogues", "--input", str(qa), "--name", "qa", "--out-dir", str(tmp_path)]
    assert main([*args, "--question-column", "q", "--answer-column", "a"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "  read rows      3",
        "  kept samples   3  train 2 · val 1",
        "  sessions       3  train 2 · val 1",
        "  words         14  train 11 · val 3",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["data", "twitter", "--input", "x", "--name", "n"],
            "error: unknown data source 'twitter'; the sources are: telegram, dialogues, corpus",
        ),
        (
            ["data", "telegram", "--name", "n"],
            "error: --input is required: the telegram file to read",
        ),
        (
            ["data", "telegram", "--input", "x"],
            "error: --name None: give the data set a plain name",
        ),
        (
            ["data", "telegram", "--input", "x", "--name", "a/b"],
            "error: --name 'a/b': give the data set a plain name",
        ),
        (
            ["data", "telegram", "--input", str(GROUP), "--name", "n", "--persona", "Дима"],
            "error: no message in",
        ),
        (
            ["data", "corpus", "--input", "nope.txt", "--name", "n"],
            "error: corpus nope.txt does not exist",
        ),
        (
            ["data", "corpus", "--input", "x", "--name", "n", "--min-chars", "-1"],
            "error: --min-chars -1: must be a whole number >= 0",
        ),
    ],
)
def test_mistakes_are_one_line_errors(tmp_path, capsys, args, message):
    assert main([*args, "--out-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir())
