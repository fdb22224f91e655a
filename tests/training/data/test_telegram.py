"""The Telegram importer: the outside conformance fixture, the project's own fixtures (group
chat, full-account export), every rule with exact samples, streaming, and bad inputs."""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path

import pytest

from balabol.errors import ConfigError, DataError
from tests.training.data import FIXTURES
from training.data.clean import CleanConfig, Cleaner
from training.data.telegram import TelegramConfig, read

TELEGRAM = FIXTURES / "telegram"
GROUP = TELEGRAM / "group_chat.json"


def samples(path: Path, clean: CleanConfig | None = None, **config):
    cleaner = Cleaner(clean)
    out = [(s.session, list(s.messages)) for s in read(path, TelegramConfig(**config), cleaner)]
    return out, cleaner.counts


def test_outside_fixture_parses():
    # LangChain's sample export (MIT): text as a string and as a list of strings and entities
    out, counts = samples(TELEGRAM / "langchain_result.json", persona="Jimmeny Marvelton")
    assert out == [
        (
            "5965280513:0",
            [
                ("user", "Hi nemesis"),
                ("assistant", "we meet again\nyou will not trick me this time"),
                ("user", "this is bold text: BOLD TEXT"),
                ("assistant", "this is an email: <email>"),
            ],
        )
    ]
    assert counts.read == {"messages": 6}
    assert counts.dropped == {"no_prompt": 1}  # the persona spoke first
    assert counts.changed == {"emails": 1}


GROUP_SAMPLES = [
    (
        "4000000001:0",
        [
            ("user", "Привет всем! Кто идёт в кино <date>?"),  # photo dropped, service skipped
            ("assistant", "Я иду! Пиши <user>\nБилеты тут: <url>"),  # two messages merged
            ("user", "👍\n<user> сообщает: премьера в пятницу"),  # sticker emoji + forward
            ("assistant", "Отлично, звони мне <phone>"),
        ],
    ),
    # session 1 ("Аня, ты где?") got no reply; session 2 opens with a reply to message 2,
    # which becomes its prompt, and a reply after a 5-hour pause continues it
    (
        "4000000001:2",
        [
            ("user", "Привет всем! Кто идёт в кино <date>?"),
            ("assistant", "Кстати, про кино: я опоздаю"),
            ("user", "Ок 😀 напиши на <email>"),
            ("assistant", "Написала."),
        ],
    ),
]


@pytest.mark.parametrize("persona", ["Аня", "аня", "user111", "111"])
def test_group_chat(persona):
    out, counts = samples(GROUP, persona=persona)
    assert out == GROUP_SAMPLES
    assert counts.read == {"messages": 17}
    assert counts.dropped == {
        "service": 2, "media": 2, "no_reply": 2, "empty": 1, "cleaned_away": 1,
    }  # fmt: skip
    assert counts.changed == {
        "mentions": 2, "hashtags": 2, "dates": 1, "links": 1, "phones": 1, "emails": 1,
    }  # fmt: skip


def test_context_window_and_media_placeholders():
    out, counts = samples(GROUP, persona="Аня", max_turns=2, media="placeholder")
    assert out == [
        (
            "4000000001:0",
            [
                ("user", "Привет всем! Кто идёт в кино <date>?\n<photo>"),
                ("assistant", "Я иду! Пиши <user>\nБилеты тут: <url>"),
            ],
        ),
        (
            "4000000001:0",
            [
                ("user", "👍\n<user> сообщает: премьера в пятницу"),
                ("assistant", "Отлично, звони мне <phone>"),
            ],
        ),
        (
            "4000000001:2",
            [
                ("user", "Привет всем! Кто идёт в кино <date>?"),
                ("assistant", "Кстати, про кино: я опоздаю"),
            ],
        ),
        ("4000000001:2", [("user", "Ок 😀 напиши на <email>"), ("assistant", "Написала.")]),
    ]
    assert "media" not in counts.dropped


def test_stickers_as_media_and_emoji_removal():
    out, counts = samples(GROUP, CleanConfig.from_flags(on=["emoji"]), persona="Аня")
    assert out[0][1][2] == ("user", "<user> сообщает: премьера в пятницу")  # the 👍 sticker is gone
    assert out[1][1][2] == ("user", "Ок напиши на <email>")
    assert counts.dropped["media"] == 3
    out, _ = samples(GROUP, persona="Аня", sticker_emoji=False)
    assert out[0][1][2] == ("user", "<user> сообщает: премьера в пятницу")


def test_cleaning_steps_switch_off():
    clean = CleanConfig.from_flags(off=["links", "phones", "mentions", "dates"])
    out, counts = samples(GROUP, clean, persona="Аня")
    assert out[0][1] == [
        ("user", "Привет всем! Кто идёт в кино 25.11.2023?"),
        ("assistant", "Я иду! Пиши @boris_k\nБилеты тут: https://kino.ru/tickets"),
        # the forwarded sender's name is only in the text: never as a "Forwarded from" header
        ("user", "👍\nКиноафиша сообщает: премьера в пятницу"),
        ("assistant", "Отлично, звони мне +7 (999) 123-45-67"),
    ]
    assert counts.changed == {"hashtags": 2, "emails": 1}


def test_forwarded_messages_are_not_the_persona():
    # Вика forwarded message 8: as the persona, her own words stay hers, the forward does not
    out, _ = samples(GROUP, persona="Вика", gap_minutes=10_000)
    replies = [text for _, msgs in out for role, text in msgs if role == "assistant"]
    assert replies == ["Ок 😀 напиши на <email>"]


def test_longer_gap_joins_sessions():
    out, counts = samples(GROUP, persona="Аня", gap_minutes=24 * 60, max_turns=100)
    assert [session for session, _ in out] == ["4000000001:0"]
    assert len(out[0][1]) == 8
    assert counts.dropped["no_reply"] == 1  # "Спасибо за вечер"


def test_account_export_owner_is_the_default_persona():
    out, counts = samples(TELEGRAM / "account_export.json")
    assert out == [
        ("222:0", [("user", "Как дела?"), ("assistant", "Хорошо, а у тебя?")]),
        ("333:0", [("user", "Всем пока"), ("assistant", "Пока!")]),  # from left_chats
    ]
    assert counts.read == {"messages": 7}
    assert counts.dropped == {"no_reply": 1, "no_prompt": 1, "service": 1}


def test_account_export_chat_filter():
    out, counts = samples(TELEGRAM / "account_export.json", chats=("Борис",))
    assert [s for s, _ in out] == ["222:0"]
    assert counts.dropped["other_chat"] == 4
    out, _ = samples(TELEGRAM / "account_export.json", chats=("333",))
    assert [s for s, _ in out] == ["333:0"]


def test_export_folder_is_accepted(tmp_path):
    (tmp_path / "result.json").write_bytes(GROUP.read_bytes())
    out, _ = samples(tmp_path, persona="Аня")
    assert out == GROUP_SAMPLES


def test_date_string_when_no_unixtime(tmp_path):
    chat = json.loads(GROUP.read_text(encoding="utf-8"))
    for m in chat["messages"]:
        del m["date_unixtime"]
    path = tmp_path / "result.json"
    path.write_text(json.dumps(chat, ensure_ascii=False), encoding="utf-8")
    out, _ = samples(path, persona="Аня")
    assert out == GROUP_SAMPLES


# --- streaming ---------------------------------------------------------------------------------


def _big_export(path: Path, n: int, *, account: bool, pause: int) -> int:
    """A generated export of n messages, a pause of `pause` seconds after every 50; written
    message by message; returns its size."""
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"personal_information": {"user_id": 1}, "chats": {"list": [' if account else "")
        f.write('{"name": "Большой чат", "type": "personal_chat", "id": 7, "messages": [\n')
        for i in range(n):
            who = ("Аня", "user1") if i % 3 else ("Борис", "user2")
            m = {
                "id": i + 1,
                "type": "message",
                "date": "2023-08-23T13:11:23",
                "date_unixtime": str(1_700_000_000 + 60 * i + pause * (i // 50)),
                "from": who[0],
                "from_id": who[1],
                "text": ["Сообщение номер ", {"type": "bold", "text": str(i)}, " — привет!"],
                "text_entities": [
                    {"type": "plain", "text": "Сообщение номер "},
                    {"type": "bold", "text": str(i)},
                    {"type": "plain", "text": " — привет!"},
                ],
            }
            f.write(("," if i else "") + json.dumps(m, ensure_ascii=False, indent=1) + "\n")
        f.write("]}" + ("]}}" if account else "") + "\n")
    return path.stat().st_size


def _peak(path: Path, account: bool) -> tuple[int, int]:
    """(peak traced bytes, samples) of reading an export."""
    cleaner = Cleaner()
    gc.collect()
    tracemalloc.start()
    try:
        config = TelegramConfig(persona=None if account else "Аня")  # the owner, user1
        n = sum(1 for _ in read(path, config, cleaner))
        return tracemalloc.get_traced_memory()[1], n
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("account", "pause"),
    [(True, 7200), (False, 0)],
    ids=["full-account", "single-chat-one-endless-session"],
)
def test_large_export_streams_in_bounded_memory(tmp_path, account, pause):
    # Memory is a constant (ijson's read buffer and what it parsed from it, the last
    # REPLY_MEMORY messages, one sample window): 4x the messages must not need 4x the memory.
    list(read(GROUP, TelegramConfig(persona="Аня"), Cleaner()))  # imports done before measuring
    small, large = tmp_path / "small.json", tmp_path / "large.json"
    _big_export(small, 1_200, account=account, pause=pause)
    size = _big_export(large, 4_800, account=account, pause=pause)
    peak_small, _ = _peak(small, account)
    peak_large, n = _peak(large, account)
    assert n > 300  # 8-turn windows of 12 messages each came through
    assert peak_large < 2 * peak_small, (peak_small, peak_large)  # a leak would be ~4x
    assert peak_large < size / 3, f"peak {peak_large:,} bytes for a {size:,}-byte export"


# --- bad input ---------------------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "result.json"
    path.write_text(text, encoding="utf-8")
    return path


def error(path: Path, **config) -> str:
    with pytest.raises(DataError) as e:
        list(read(path, TelegramConfig(**config), Cleaner()))
    return str(e.value)


def test_unknown_persona_lists_senders():
    assert error(GROUP, persona="Дима") == (
        f"no message in {GROUP} is from persona 'Дима'. Senders found: 'Аня' (user111): "
        "6 messages; 'Вика' (user333): 5 messages; 'Борис' (user222): 4 messages. "
        "Pass --persona with one of these names or ids"
    )


def test_single_chat_without_persona_lists_senders():
    message = error(TELEGRAM / "langchain_result.json")
    assert "does not say whose account it is, so there is no default persona" in message
    assert (
        "'Jimmeny Marvelton' (user123450513): 4 messages; 'Batman & Robin' (user6565661032): 2 messages"
        in message
    )


def test_malformed_json_has_a_position(tmp_path):
    path = _write(
        tmp_path,
        '{\n "name": "x",\n "messages": [\n  {"id": 1, "type": "service"},\n  {"id": 2,}\n ]\n}\n',
    )
    assert error(path, persona="x") == (
        f"{path} is not valid JSON: parse error: invalid object key (must be a string) near "
        "line 5, column 13 (byte 75). Re-export the chat from Telegram Desktop (format: JSON), "
        "or fix the file there"
    )


def test_malformed_json_far_into_a_large_file(tmp_path):
    good = ',\n  {"id": 1, "type": "service", "date_unixtime": "1"}' * 5000  # ~270 KB
    text = '{"messages": [\n  {"id": 0, "type": "service"}' + good + ',\n  {"id": 2,}\n]}'
    path = _write(tmp_path, text)
    after = text.rindex("}", 0, len(text) - 3) + 1  # yajl stops after the bad token
    line = text.count("\n", 0, after) + 1
    column = after - text.rfind("\n", 0, after)
    byte = len(text[:after].encode())
    assert byte > 65_536  # past ijson's first reads
    assert f"near line {line}, column {column} (byte {byte})." in error(path, persona="x")


def test_cut_short_file(tmp_path):
    text = GROUP.read_text(encoding="utf-8")
    path = _write(tmp_path, text[: len(text) // 2])
    assert "the file is cut short" in error(path, persona="Аня")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected a JSON object (a Telegram Desktop export's result.json), found array"),
        (
            '{"name": "x", "chat": []}',
            "has neither 'messages' (a single-chat export) nor 'chats' (a full-account export); its top-level keys: 'name', 'chat'",
        ),
        (
            '{"messages": [{"id": 5, "type": "message", "text": "hi"}]}',
            "message 5 has no 'date' or 'date_unixtime' (it has: id, text, type)",
        ),
        (
            '{"messages": [{"id": 5, "date": "yesterday", "text": "hi"}]}',
            "message 5 has an unreadable date ('yesterday'",
        ),
        ('{"messages": ["hi"]}', "a message must be a JSON object, found 'hi'"),
    ],
)
def test_wrong_schema(tmp_path, text, message):
    assert message in error(_write(tmp_path, text), persona="x")


def test_missing_file(tmp_path):
    assert error(tmp_path / "nope.json") == (
        f"Telegram export {tmp_path / 'nope.json'} does not exist; export a chat from Telegram "
        "Desktop (Export chat history, format: JSON) and pass its result.json, or the folder "
        "that holds it, as --input"
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"gap_minutes": 0}, "--gap-minutes 0: must be above 0"),
        ({"max_turns": 1}, "--max-turns 1: must be a whole number >= 2"),
        ({"media": "keep"}, "--media 'keep': must be one of drop, placeholder"),
    ],
)
def test_config_errors(config, message):
    with pytest.raises(ConfigError, match=message):
        TelegramConfig(**config)
