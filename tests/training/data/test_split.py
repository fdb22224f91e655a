"""Writing data/NAME: the jsonl schema the trainer reads, the seeded split by session,
duplicates across the whole set, stats.json, atomic writes and the empty-output error."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from balabol.errors import ConfigError, DataError
from tests.training.data import FIXTURES
from training.data import corpus, dialogues, telegram
from training.data.clean import CleanConfig, Cleaner
from training.data.sample import Sample
from training.data.split import SplitConfig, table, write

GROUP = FIXTURES / "telegram" / "group_chat.json"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def build(out: Path, samples_of, clean: CleanConfig | None = None, **split):
    cleaner = Cleaner(clean)
    stats = write(samples_of(cleaner), SplitConfig(out_dir=out, **split), cleaner)
    return stats, lines(out / "train.jsonl"), lines(out / "val.jsonl")


def group(cleaner: Cleaner) -> Iterator[Sample]:
    return telegram.read(GROUP, telegram.TelegramConfig(persona="Аня"), cleaner)


def test_telegram_to_jsonl_exact(tmp_path):
    stats, train, val = build(tmp_path / "friends", group)
    assert sorted(train + val, key=lambda s: s["session"]) == [
        {
            "messages": [
                {"role": "user", "content": "Привет всем! Кто идёт в кино 25.11.2023?"},
                {"role": "assistant", "content": "Я иду! Пиши <user>\nБилеты тут: <url>"},
                {"role": "user", "content": "👍\n<user> сообщает: премьера в пятницу"},
                {"role": "assistant", "content": "Отлично, звони мне <phone>"},
            ],
            "session": "4000000001:0",
        },
        {
            "messages": [
                {"role": "user", "content": "Привет всем! Кто идёт в кино 25.11.2023?"},
                {"role": "assistant", "content": "Кстати, про кино: я опоздаю"},
                {"role": "user", "content": "Ок 😀 напиши на <email>"},
                {"role": "assistant", "content": "Написала."},
            ],
            "session": "4000000001:2",
        },
    ]
    assert len(train) == len(val) == 1  # two sessions: one each
    # Russian stays readable in the file, not \u-escaped
    assert "Привет всем" in (tmp_path / "friends" / "train.jsonl").read_text(encoding="utf-8") + (
        tmp_path / "friends" / "val.jsonl"
    ).read_text(encoding="utf-8")
    on_disk = json.loads((tmp_path / "friends" / "stats.json").read_text(encoding="utf-8"))
    assert on_disk == stats
    assert {
        k: stats[k] for k in ("kept", "sessions", "tokens", "token_unit", "read", "dropped")
    } == {
        "kept": 2,
        "sessions": 2,
        "tokens": 42,
        "token_unit": "words",
        "read": {"messages": 17},
        "dropped": {"service": 2, "media": 2, "no_reply": 2, "empty": 1, "cleaned_away": 1},
    }
    assert stats["train"]["samples"] + stats["val"]["samples"] == 2
    assert stats["train"]["tokens"] + stats["val"]["tokens"] == 42
    assert stats["warnings"] == []
    assert sorted(p.name for p in (tmp_path / "friends").iterdir()) == [
        "stats.json",
        "train.jsonl",
        "val.jsonl",
    ]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "friends" / "train.jsonl").stat().st_mode & 0o777 == 0o666 & ~umask


def test_the_trainer_reads_what_is_written(tmp_path):
    from training.dataset import data_files, read_jsonl

    build(tmp_path / "friends", group)
    train, val = data_files(tmp_path / "friends")
    read = [s for path in (train, val) for s in read_jsonl(path)]
    assert sorted(s.session for s in read) == ["4000000001:0", "4000000001:2"]
    assert all(s.messages[-1]["role"] == "assistant" for s in read)


def _many_jokes(path: Path, n: int) -> Path:
    path.write_text("".join(f"Анекдот номер {i}\n" for i in range(n)), encoding="utf-8")
    return path


def jokes(path: Path):
    return lambda cleaner: corpus.read(path, corpus.CorpusConfig(), cleaner)


def test_split_is_seeded_and_near_the_fraction(tmp_path):
    source = jokes(_many_jokes(tmp_path / "jokes.txt", 1000))
    a = build(tmp_path / "a", source, seed=1)
    b = build(tmp_path / "b", source, seed=1)
    c = build(tmp_path / "c", source, seed=2)
    assert a[1:] == b[1:]  # same seed, same files
    assert a[2] != c[2]
    assert len(a[2]) in (199, 200, 201)  # 20% of 1000 one-sample sessions
    tenth = build(tmp_path / "d", source, val_fraction=0.1)
    assert len(tenth[2]) in (99, 100, 101)


def test_sessions_never_straddle_train_and_val(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"q": f"Вопрос {i}", "a": f"Ответ {i}", "dialog": i % 37} for i in range(500)]
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    source = lambda cleaner: dialogues.read(  # noqa: E731
        path, dialogues.DialoguesConfig(question="q", answer="a", session="dialog"), cleaner
    )
    stats, train, val = build(tmp_path / "qa", source)
    train_sessions, val_sessions = {s["session"] for s in train}, {s["session"] for s in val}
    assert not train_sessions & val_sessions
    assert len(train_sessions | val_sessions) == stats["sessions"] == 37
    assert stats["val"]["sessions"] == len(val_sessions)
    assert 60 < len(val) < 140


def test_duplicates_across_the_whole_set(tmp_path):
    source = lambda cleaner: dialogues.read(  # noqa: E731
        FIXTURES / "dialogues" / "qa.jsonl", dialogues.DialoguesConfig(), cleaner
    )
    stats, train, val = build(tmp_path / "qa", source)
    assert sorted(s["session"] for s in train + val) == ["row:1", "row:2"]
    assert stats["dropped"] == {
        "empty": 1, "mostly_replaced": 1, "duplicate": 1, "near_duplicate": 1,
    }  # fmt: skip
    stats, train, val = build(tmp_path / "qa", source, CleanConfig(dedup="off"))
    assert stats["kept"] == 4


def test_one_session_leaves_val_empty_with_a_warning(tmp_path):
    source = lambda cleaner: iter([Sample((("user", "a"), ("assistant", "b")), "only")])  # noqa: E731
    stats, train, val = build(tmp_path / "one", source)
    assert (len(train), len(val)) == (1, 0)
    assert stats["warnings"] == [
        "val.jsonl is empty: all samples come from one session, so training will not evaluate; "
        "give more data (or, for a chat, a shorter --gap-minutes)"
    ]


def test_empty_after_cleaning_says_what_dropped_what(tmp_path):
    out = tmp_path / "nothing"
    cleaner = Cleaner(CleanConfig(placeholders=False, min_chars=100))
    with pytest.raises(DataError) as e:
        write(group(cleaner), SplitConfig(out_dir=out), cleaner)
    assert str(e.value) == (
        f"nothing is left to write to {out}: read 17 messages; dropped: "
        "2 service (messages: Telegram service messages (joins, pins, calls)); "
        "2 media (messages: media without text (--media placeholder keeps them)); "
        "2 too_short (samples: replies shorter than --min-chars); "
        "2 no_reply (turns: messages the persona never answered); "
        "1 empty (messages/rows/entries with no text at all); "
        "1 cleaned_away (messages/rows/entries whose text was all removed by cleaning steps); "
        "replacements by cleaning step: mentions 2, hashtags 2, links 1, phones 1, emails 1. "
        "Turn off the step that removes too much (--no-NAME), loosen the filter that "
        "dropped the most, or check the input and its options"
    )
    assert not out.exists()  # nothing half-written


def test_a_failure_keeps_the_previous_output(tmp_path):
    out = tmp_path / "friends"
    build(out, group)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(cleaner):
        yield from group(cleaner)
        raise DataError("the export ends badly")

    with pytest.raises(DataError, match="ends badly"):
        build(out, broken)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp files either


def test_token_count_with_a_tokenizer(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from balabol.prompt import BOS_TOKEN, EOS_TOKEN, render_chat

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=[BOS_TOKEN, EOS_TOKEN],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["Привет всем! Кто идёт в кино?", "Я иду! Написала."] * 3, trainer)
    (tmp_path / "tok").mkdir()
    tok.save(str(tmp_path / "tok" / "tokenizer.json"))
    stats, train, val = build(tmp_path / "friends", group, tokenizer=str(tmp_path / "tok"))
    expected = sum(
        len(tok.encode(render_chat(s["messages"], add_generation_prompt=False)).ids)
        for s in train + val
    )
    assert stats["tokens"] == expected > 42  # more tokens than words
    assert stats["token_unit"] == f"tokens ({tmp_path / 'tok'})"
    with pytest.raises(ConfigError, match=r"no tokenizer\.json there"):
        build(tmp_path / "x", group, tokenizer=str(tmp_path))


def test_config_errors():
    with pytest.raises(ConfigError, match=r"--val-fraction 1\.0: must be between 0 and 1"):
        SplitConfig(out_dir=Path("x"), val_fraction=1.0)


def test_table(tmp_path):
    stats, _, _ = build(tmp_path / "friends", group)
    assert table(stats).splitlines() == [
        f"{tmp_path / 'friends'}: train.jsonl, val.jsonl, stats.json",
        "  read messages          17",
        "  kept samples            2  train 1 · val 1",
        "  sessions                2  train 1 · val 1",
        f"  words                  42  train {stats['train']['tokens']} · val {stats['val']['tokens']}",
        "  dropped: service        2  messages: Telegram service messages (joins, pins, calls)",
        "  dropped: media          2  messages: media without text (--media placeholder keeps them)",
        "  dropped: no_reply       2  turns: messages the persona never answered",
        "  dropped: empty          1  messages/rows/entries with no text at all",
        "  dropped: cleaned_away   1  messages/rows/entries whose text was all removed by cleaning steps",
        "  cleaned: mentions       2  replacements",
        "  cleaned: hashtags       2  replacements",
        "  cleaned: links          1  replacements",
        "  cleaned: phones         1  replacements",
        "  cleaned: emails         1  replacements",
    ]
