"""The Telegram importer: the outside conformance fixtures (LangChain's export; real channel
and Saved Messages exports), the project's own fixtures (group chat, full-account export,
a joke channel), every rule with exact samples, channels as posts, signatures, streaming,
and bad inputs."""

from __future__ import annotations

import codecs
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
            ("user", "Привет всем! Кто идёт в кино 25.11.2023?"),  # photo dropped, service skipped
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
            ("user", "Привет всем! Кто идёт в кино 25.11.2023?"),
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
        "mentions": 2, "hashtags": 2, "links": 1, "phones": 1, "emails": 1,
    }  # fmt: skip


def test_context_window_and_media_placeholders():
    out, counts = samples(GROUP, persona="Аня", max_turns=2, media="placeholder")
    assert out == [
        (
            "4000000001:0",
            [
                ("user", "Привет всем! Кто идёт в кино 25.11.2023?\n<photo>"),
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
                ("user", "Привет всем! Кто идёт в кино 25.11.2023?"),
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


# --- channels and other exports with no one to answer: posts ---------------------------------

JOKE_CHANNEL = TELEGRAM / "joke_channel.json"
POST = ("user", "Напиши пост.")
CHANNEL_NOTE = (
    "'Анекдоты дня' (a channel): the persona has no one to answer, so its 5 posts became "
    "samples [user: 'Напиши пост.', assistant: the post] (the posts are in Russian; --prompt "
    "sets another)"
)


def test_a_channel_becomes_posts_with_a_prompt_in_its_language():
    out, counts = samples(JOKE_CHANNEL)  # no --persona: the channel itself
    assert out == [
        # dates, times and a site's name are the joke's, and stay; the signature goes
        ("1500000001:post2", [POST, ("assistant", "Штирлиц проснулся 9 мая в 17:20 и понял, что проспал.")]),
        ("1500000001:post3", [POST, ("assistant", "— Доктор, я буду жить?\n— А смысл?")]),
        (
            "1500000001:post5",
            [POST, ("assistant", "Прочитал на Gazeta.ru, что понедельник отменили. Оказалось, Gazeta.ru пошутила.")],
        ),
        # a forward is a post too; its source's name goes in any case ("золотые анекдоты")
        ("1500000001:post6", [POST, ("assistant", "Колобок повесился. (с) <user>")]),
        (
            "1500000001:post8",
            [POST, ("assistant", "Встреча выпускников назначена на 23.08.2023.\nПриходите все!")],
        ),
    ]  # fmt: skip
    assert counts.read == {"messages": 9}
    # post 7 was only a link; post 9 only the signature; post 4 a photo
    assert counts.dropped == {"service": 1, "media": 1, "mostly_replaced": 1, "cleaned_away": 1}
    assert counts.changed == {"signatures": 5, "mentions": 1, "links": 1}
    assert counts.notes == [CHANNEL_NOTE]


def test_posts_prompt_override_and_none():
    out, counts = samples(JOKE_CHANNEL, prompt="Расскажи анекдот.")
    assert out[1][1] == [
        ("user", "Расскажи анекдот."),
        ("assistant", "— Доктор, я буду жить?\n— А смысл?"),
    ]
    assert counts.notes == [
        "'Анекдоты дня' (a channel): the persona has no one to answer, so its 5 posts became "
        "samples [user: 'Расскажи анекдот.', assistant: the post]"
    ]
    out, counts = samples(JOKE_CHANNEL, prompt="")
    assert out[1][1] == [("assistant", "— Доктор, я буду жить?\n— А смысл?")]
    assert "its 5 posts became samples, no prompt" in counts.notes[0]


def test_posts_with_dates_and_domains_turned_on():
    out, _ = samples(JOKE_CHANNEL, CleanConfig.from_flags(on=["dates", "domains"]))
    replies = [msgs[-1][1] for _, msgs in out]
    assert replies[0] == "Штирлиц проснулся <date> в <time> и понял, что проспал."
    assert replies[2] == "Прочитал на <url>, что понедельник отменили. Оказалось, <url> пошутила."


def test_signatures_can_be_kept():
    out, counts = samples(JOKE_CHANNEL, signatures=False)
    replies = [msgs[-1][1] for _, msgs in out]
    assert replies[0] == "Штирлиц проснулся 9 мая в 17:20 и понял, что проспал.\n\nАнекдоты дня"
    assert replies[-1] == "Анекдоты дня"  # post 9, the signature alone
    assert "signatures" not in counts.changed


def test_a_channel_read_as_a_dialogue_has_almost_no_prompts():
    out, counts = samples(JOKE_CHANNEL, mode="dialogue")
    # only the forward, someone else's words in a dialogue, prompts the next post
    assert out == [
        (
            "1500000001:0",
            [
                ("user", "Колобок повесился. (с) <user>"),
                ("assistant", "Встреча выпускников назначена на 23.08.2023.\nПриходите все!"),
            ],
        )
    ]
    assert counts.dropped["no_prompt"] == 1  # the session the persona opened
    assert not counts.notes


def test_mode_posts_takes_only_the_persona():
    out, counts = samples(GROUP, persona="Аня", mode="posts", prompt="Что нового?")
    assert [msgs for _, msgs in out][:2] == [
        [("user", "Что нового?"), ("assistant", "Я иду! Пиши <user>")],
        [("user", "Что нового?"), ("assistant", "Билеты тут: <url>")],
    ]
    assert counts.dropped["not_persona"] == 9  # Борис's and Вика's messages, media included
    assert counts.notes[0].startswith("'Друзья' (--mode posts): the persona has no one")


def test_real_private_channel_export():
    # tg2md's test export (BSD-3-Clause): an older format, no date_unixtime, no text_entities
    out, counts = samples(TELEGRAM / "tg2md_private_channel_2021.json")
    assert len(out) == 13
    assert out[:2] == [
        ("1292077344:post2", [("user", "Write a post."), ("assistant", "test text post")]),
        ("1292077344:post4", [("user", "Write a post."), ("assistant", "photo with text")]),
    ]
    assert out[7] == (
        "1292077344:post14",
        [("user", "Write a post."), ("assistant", "text link\n\nexample.com\n\n<email>")],
    )
    assert counts.read == {"messages": 19}
    assert counts.dropped == {"service": 1, "media": 5}  # photos, a voice message, a sound
    assert counts.notes == [
        "'test' (a channel): the persona has no one to answer, so its 13 posts became samples "
        "[user: 'Write a post.', assistant: the post] (the posts are in English; --prompt sets "
        "another)"
    ]


def test_real_saved_messages_export():
    # innerdvations/telegram-chat-parser's saved.json (MIT): no top-level name, numeric ids
    out, counts = samples(TELEGRAM / "innerdvations_saved_messages_2020.json")
    assert len(out) == 12
    replies = dict((session, msgs[-1][1]) for session, msgs in out)
    assert replies["9999999999:post210743"] == "Message copied and pasted."  # header gone
    assert replies["9999999999:post176390"] == (
        "I’m a message from another person forwarded to saved chat"
    )
    assert counts.dropped == {"media": 4, "service": 1, "not_persona": 4}
    assert counts.changed == {"links": 4, "mentions": 2, "headers": 1}
    assert counts.notes[0].startswith("'9999999999' (Saved Messages): the persona has no one")


def test_synthetic_export_with_rare_fields():
    # Tkonverter's hand-written export (MIT): reactions, polls, payments, service actions
    out, counts = samples(TELEGRAM / "SYNTHETIC_tkonverter_personal_chat.json", persona="Me")
    assert [[role for role, _ in msgs] for _, msgs in out] == [["user", "assistant"] * 2]
    assert counts.read == {"messages": 87}
    assert counts.dropped == {"service": 62, "media": 9, "empty": 4, "no_prompt": 2, "no_reply": 1}


def _chat(path: Path, messages: list[tuple[str, object]], kind: str = "personal_chat") -> Path:
    """A one-chat export of (sender, text) messages a minute apart; ids from 1. In a channel
    every message is from the channel."""
    ids = {"Аня": "user1", "Борис": "user2"}
    if kind == "public_channel":
        messages = [("Чат", text) for _, text in messages]
        ids = {"Чат": "channel5"}
    chat = {
        "name": "Чат",
        "type": kind,
        "id": 5,
        "messages": [
            {"id": i, "type": "message", "date_unixtime": str(1_700_000_000 + 60 * i),
             "from": who, "from_id": ids[who], "text": text}
            for i, (who, text) in enumerate(messages, 1)
        ],
    }  # fmt: skip
    path.write_text(json.dumps(chat, ensure_ascii=False), encoding="utf-8")
    return path


def test_an_export_where_only_the_persona_wrote_is_posts(tmp_path):
    path = _chat(tmp_path / "result.json", [("Аня", "Первая заметка"), ("Аня", "Вторая")])
    out, counts = samples(path, persona="Аня")
    assert out == [
        ("5:post1", [POST, ("assistant", "Первая заметка")]),
        ("5:post2", [POST, ("assistant", "Вторая")]),
    ]
    assert counts.notes[0].startswith("'Чат' (only the persona wrote text):")
    # once someone else writes, it is a dialogue again
    path = _chat(tmp_path / "result.json", [("Борис", "Как дела?"), ("Аня", "Хорошо")])
    out, counts = samples(path, persona="Аня")
    assert out == [("5:0", [("user", "Как дела?"), ("assistant", "Хорошо")])]
    assert not counts.notes


def test_a_signature_line_in_a_dialogue_is_cut(tmp_path):
    sig = "--\nОтправлено с телефона"
    path = _chat(
        tmp_path / "result.json",
        [
            ("Борис", "Привет"), ("Аня", f"Привет!\n{sig}"),
            ("Борис", "Как дела?"), ("Аня", f"Хорошо.\n{sig}"),
            ("Борис", "Что делаешь?"), ("Аня", "ок"),
            ("Борис", "Пойдём в кино?"), ("Аня", f"Пойдём\n{sig}"),
        ],
    )  # fmt: skip
    out, counts = samples(path, persona="Аня")
    assert [text for _, msgs in out for role, text in msgs if role == "assistant"] == [
        "Привет!", "Хорошо.", "ок", "Пойдём",
    ]  # fmt: skip
    assert counts.changed == {"signatures": 6}  # two lines in each of three messages


def test_a_signature_link_inside_a_line_is_cut(tmp_path):
    link = {"type": "text_link", "text": "источник", "href": "https://t.me/src"}
    posts: list[tuple[str, object]] = [("", [f"Шутка номер {i}. Взято: ", link]) for i in range(4)]
    posts.append(("", "Без ссылки, но про источник"))  # the same word as text stays
    out, counts = samples(_chat(tmp_path / "result.json", posts, "public_channel"))
    assert [msgs[-1][1] for _, msgs in out] == [
        "Шутка номер 0. Взято:", "Шутка номер 1. Взято:", "Шутка номер 2. Взято:",
        "Шутка номер 3. Взято:", "Без ссылки, но про источник",
    ]  # fmt: skip
    assert counts.changed == {"signatures": 4}


def test_a_line_in_half_the_messages_or_fewer_is_no_signature(tmp_path):
    posts = [("", f"Пост {i}\nПодпишись!" if i < 3 else f"Пост {i}\nтекст") for i in range(6)]
    out, counts = samples(_chat(tmp_path / "result.json", posts, "public_channel"))
    assert out[0][1][-1] == ("assistant", "Пост 0\nПодпишись!")
    assert "signatures" not in counts.changed


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


def test_empty_and_blank_files(tmp_path):
    path = _write(tmp_path, "")
    assert error(path, persona="Аня") == (
        f"Telegram export {path} is empty (0 bytes); export a chat from Telegram Desktop "
        "(Export chat history, format: JSON) and pass its result.json, or the folder that "
        "holds it, as --input"
    )
    assert "the file is cut short" in error(_write(tmp_path, "  \n"), persona="Аня")


def test_not_utf8(tmp_path):
    text = GROUP.read_text(encoding="utf-8")
    path = tmp_path / "result.json"
    path.write_bytes(text.encode("cp1251", errors="replace"))
    assert error(path, persona="Аня") == (
        f"{path} is not UTF-8 text (invalid bytes near line 2, column 13 (byte 14)); Telegram "
        "Desktop writes UTF-8: re-export the chat (format: JSON), or save the file as UTF-8"
    )
    path.write_bytes(text.encode("utf-16"))
    assert error(path, persona="Аня").startswith(f"{path} is not UTF-8 text (UTF-16 near")
    path.write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))  # UTF-8 with a BOM is fine
    assert samples(path, persona="Аня")[0] == GROUP_SAMPLES


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
        ({"mode": "chat"}, "--mode 'chat': must be one of auto, dialogue, posts"),
    ],
)
def test_config_errors(config, message):
    with pytest.raises(ConfigError, match=message):
        TelegramConfig(**config)
