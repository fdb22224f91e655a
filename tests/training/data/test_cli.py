"""`balabol data`: the typed signature is the CLI; it writes data/NAME and prints the table;
mistakes are one-line errors, never tracebacks."""

from __future__ import annotations

import json
import lzma

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


def _written(out) -> list[dict]:
    return [
        json.loads(line)
        for name in ("train.jsonl", "val.jsonl")
        for line in (out / name).read_text(encoding="utf-8").splitlines()
    ]


def test_a_channel_export_gives_posts_and_says_so(tmp_path, capsys):
    channel = FIXTURES / "telegram" / "tg2md_private_channel_2021.json"
    args = ["data", "telegram", "--input", str(channel), "--name", "ch", "--out-dir", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "  kept samples      13  train " in out
    assert out.rstrip().endswith(
        "note: 'test' (a channel): the persona has no one to answer, so its 13 posts became "
        "samples [user: 'Write a post.', assistant: the post] (the posts are in English; "
        "--prompt sets another)"
    )
    stats = json.loads((tmp_path / "ch" / "stats.json").read_text(encoding="utf-8"))
    assert stats["notes"] and stats["config"]["mode"] == "auto"
    assert all(
        s["messages"][0] == {"role": "user", "content": "Write a post."}
        for s in _written(tmp_path / "ch")
    )


def test_posts_without_a_prompt(tmp_path, capsys):
    channel = FIXTURES / "telegram" / "joke_channel.json"
    args = ["data", "telegram", "--input", str(channel), "--name", "ch", "--out-dir", str(tmp_path)]
    assert main([*args, "--prompt", ""]) == 0
    assert "became samples, no prompt" in capsys.readouterr().out
    assert {len(s["messages"]) for s in _written(tmp_path / "ch")} == {1}


def test_dialogue_text_compressed(tmp_path, capsys):
    text = (FIXTURES / "dialogues" / "koziev_anekdot_dialogues_excerpt.txt").read_bytes()
    path = tmp_path / "anekdots.txt.xz"
    path.write_bytes(lzma.compress(text))
    args = ["data", "dialogues", "--input", str(path), "--name", "a", "--out-dir", str(tmp_path)]
    assert main([*args, "--max-turns", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:3] == ["  read dialogues            42", "  read turns               143"]
    assert lines[-1].startswith("  dropped: odd_first_turn   11  turns: the first of a dialogue")
    written = _written(tmp_path / "a")
    assert max(len(s["messages"]) for s in written) == 4
    assert {s["messages"][0]["role"] for s in written} == {"user"}


def test_corpus_with_a_separator_line(tmp_path, capsys):
    path = tmp_path / "jokes.txt"
    path.write_text(
        "— Доктор, я буду жить?\n\n— А смысл?\n---\nКороткий анекдот.\n", encoding="utf-8"
    )
    args = ["data", "corpus", "--input", str(path), "--name", "j", "--out-dir", str(tmp_path)]
    assert main([*args, "--separator", "---", "--prompt", "Расскажи анекдот."]) == 0
    assert "  read entries   2" in capsys.readouterr().out
    replies = sorted(s["messages"][1]["content"] for s in _written(tmp_path / "j"))
    assert replies == ["Короткий анекдот.", "— Доктор, я буду жить?\n\n— А смысл?"]


def test_corpus_summary_names_the_prompt_it_chose(tmp_path, capsys):
    path = tmp_path / "jokes.txt"
    path.write_text("Колобок повесился.\nШтирлиц шёл по коридору.\n", encoding="utf-8")
    args = ["data", "corpus", "--input", str(path), "--name", "j", "--out-dir", str(tmp_path)]
    assert main(args) == 0
    assert (
        "note: each entry became [user: 'Расскажи анекдот.', assistant: the entry]: the corpus "
        'is in Russian; --prompt sets another prompt ("" for none)'
    ) in capsys.readouterr().out.splitlines()
    assert {s["messages"][0]["content"] for s in _written(tmp_path / "j")} == {"Расскажи анекдот."}


# Every importer, on a file that is empty, not UTF-8, cut short or of the wrong shape: one line
# naming the problem and the fix, exit 1, nothing written.
BAD_INPUT = [
    ("telegram", "result.json", b"", "is empty (0 bytes); export a chat from Telegram Desktop"),
    ("telegram", "result.json", '{"name": "Чат"}'.encode("cp1251"), "is not UTF-8 text"),
    ("telegram", "result.json", b'{"messages": [{"id": 1, ', "the file is cut short"),
    ("telegram", "result.json", b"[1, 2]", "expected a JSON object"),
    ("dialogues", "qa.csv", b"", "is empty (0 bytes)"),
    ("dialogues", "qa.csv", "question,answer\nДа,Нет\n".encode("cp1251"), "is not UTF-8 text"),
    (
        "dialogues",
        "qa.csv",
        b'question,answer\nyes,"no',
        "is not valid CSV (unexpected end of data)",
    ),
    ("dialogues", "qa.jsonl", b'{"q": 1}\n', "has no column 'question', 'answer'"),
    ("dialogues", "d.txt", b"", "is empty (0 bytes)"),
    ("dialogues", "d.txt", "- Да\n".encode("cp1251"), "is not UTF-8 text"),
    ("dialogues", "d.txt.xz", lzma.compress(b"- yes\n- no\n" * 99)[:40], "is cut short"),
    ("dialogues", "d.txt", "Просто текст\n".encode(), "has no turns: no line starts with '- '"),
    ("corpus", "jokes.txt", b"", "is empty (0 bytes)"),
    ("corpus", "jokes.txt", "Колобок\n".encode("cp1251"), "is not UTF-8 text"),
    ("corpus", "jokes.txt.xz", lzma.compress(b"joke\n" * 999)[:40], "is cut short"),
    ("corpus", "result.json", b"{}", "a .json file is not a plain-text corpus"),
]


@pytest.mark.parametrize(("source", "name", "data", "message"), BAD_INPUT)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, source, name, data, message):
    path = tmp_path / "in" / name
    path.parent.mkdir()
    path.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    args = ["data", source, "--input", str(path), "--name", "n", "--out-dir", str(out)]
    assert main([*args, "--persona", "x"] if source == "telegram" else args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not any(out.iterdir())


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
