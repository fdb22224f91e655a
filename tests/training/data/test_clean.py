"""Each cleaning step with exact outputs, with and without placeholders; what is content
(dates, domains) stays by default; replies mostly replaced are dropped; length bounds,
duplicates, and that Russian text comes through untouched."""

from __future__ import annotations

import numpy as np
import pytest

from balabol.errors import ConfigError
from training.data.clean import (
    DEFAULT_STEPS,
    STEPS,
    CleanConfig,
    Cleaner,
    duplicates,
    tidy,
)
from training.data.sample import Counts, Sample

# step -> (input, output with placeholders, output without, replacements)
EXAMPLES = {
    "markup": (
        "<b>Жирный</b> &amp; [i]курсив[/i] **md** `код` ```py [ссылка](https://x.ru)",
        "Жирный & курсив md `код` ссылка https://x.ru",
        "Жирный & курсив md `код` ссылка https://x.ru",
        8,
    ),
    "headers": (
        "Ben, [1/1/70, 1:00 AM]\nMessage copied and pasted.\nАня, [23.08.2023 13:11]\nИ это",
        "Message copied and pasted.\nИ это",
        "Message copied and pasted.\nИ это",
        2,
    ),
    "emails": ("Пиши на ivan.petrov@mail.ru.", "Пиши на <email>.", "Пиши на.", 1),
    "links": (
        "Смотри https://example.com/a?b=1, www.ya.ru и t.me/durov! А habr.com/ru — тоже.",
        "Смотри <url>, <url> и <url>! А <url> — тоже.",
        "Смотри, и! А — тоже.",
        4,
    ),
    "domains": (
        "Читал на Gazeta.ru и habr.com/ru, а не на example.com.",
        "Читал на <url> и <url>, а не на <url>.",
        "Читал на и, а не на.",
        3,
    ),
    "mentions": (
        "@ivan_petrov, привет! Спроси у @anya.",
        "<user>, привет! Спроси у <user>.",
        ", привет! Спроси у.",
        2,
    ),
    "hashtags": ("Отдых #море #2023 #с_друзьями", "Отдых #2023", "Отдых #2023", 2),
    "dates": (
        "Встреча 23.08.2023 в 13:11, 2023-08-23T13:11:23, 5 марта 2024 года, Aug 23, 2023",
        "Встреча <date> в <time>, <date>, <date>, <date>",
        "Встреча в,,,",
        5,
    ),
    "cards": (
        "Карта 4276 1234 5678 9012 и 4276123456789012",
        "Карта <card> и <card>",
        "Карта и",
        2,
    ),
    "phones": (
        "Звони +7 (999) 123-45-67 или 8-800-555-35-35, код 123-45-67",
        "Звони <phone> или <phone>, код 123-45-67",
        "Звони или, код 123-45-67",
        2,
    ),
    "emoji": ("Ура 😀👍🏽 ❤️ 🇷🇺!", "Ура!", "Ура!", 3),
}

RUSSIAN = (
    "Ёжик в тумане — «классика»! №5 в списке, счёт 2:1, в 5 утра; 100500 раз.\n"
    "— А ты знал?\n— Нет… ну-ка, расскажи (подробно)."
)


@pytest.mark.parametrize("name", list(STEPS))
def test_each_step_exact(name):
    text, with_placeholders, without, n = EXAMPLES[name]  # every registered step has one
    for placeholders, expected in ((True, with_placeholders), (False, without)):
        cleaner = Cleaner(CleanConfig(steps=frozenset({name}), placeholders=placeholders))
        assert cleaner.text(text) == expected
        assert cleaner.counts.changed == {name: n}


@pytest.mark.parametrize("name", list(STEPS))
def test_steps_leave_russian_text_alone(name):
    cleaner = Cleaner(CleanConfig(steps=frozenset({name})))
    assert cleaner.text(RUSSIAN) == RUSSIAN
    assert not cleaner.counts.changed


def test_all_steps_together_in_order():
    cleaner = Cleaner(CleanConfig(steps=frozenset(STEPS)))
    text = "<i>Пиши</i> на a.b@mail.ru или @anya 😀, сайт example.ru #инфо, 23.08.2023 звони 89991234567"
    assert cleaner.text(text) == "Пиши на <email> или <user>, сайт <url>, <date> звони <phone>"
    assert cleaner.counts.changed == {
        "markup": 2, "emails": 1, "domains": 1, "mentions": 1, "hashtags": 1,
        "dates": 1, "phones": 1, "emoji": 1,
    }  # fmt: skip


def test_dates_times_and_domains_in_a_text_are_content_by_default():
    cleaner = Cleaner()
    text = "Штирлиц проснулся 9 мая в 17:20 и прочёл на Gazeta.ru, что 23.08.2023 отменили"
    assert cleaner.text(text) == text
    assert not cleaner.counts.changed
    # links stay metadata: a URL with a scheme or a path, www., t.me/...
    assert (
        cleaner.text("Тут: https://kino.ru/t, kino.ru/t и t.me/kino") == "Тут: <url>, <url> и <url>"
    )


def test_forwarded_names_are_replaced_as_words_in_any_case():
    cleaner = Cleaner(CleanConfig(steps=frozenset({"mentions"})))
    cleaner.add_name("Киноафиша")
    cleaner.add_name("Золотые Анекдоты")
    cleaner.add_name("Ян")  # too short to replace safely: ignored
    text = "Киноафиша пишет, Ян читает; Киноафишами не считается; КИНОАФИША"
    assert cleaner.text(text) == "<user> пишет, Ян читает; Киноафишами не считается; <user>"
    assert cleaner.text("(с) золотые анекдоты") == "(с) <user>"


@pytest.mark.parametrize(
    ("raw", "reply", "expected"),
    [
        ("", True, ("", "empty")),
        ("  \n ", False, ("", "empty")),
        ("#вечер #кино", True, ("", "cleaned_away")),
        # a reply that was only a date or a link would teach the bot to answer "<date>"
        ("9 мая", True, ("", "mostly_replaced")),
        ("Gazeta.ru", True, ("", "mostly_replaced")),
        ("https://kino.ru/tickets", True, ("", "mostly_replaced")),
        ("Смотри https://kino.ru/tickets", True, ("Смотри <url>", None)),  # half: kept
        ("Пиши на a@b.ru или @anya", True, ("Пиши на <email> или <user>", None)),
        ("@anya @boris привет", True, ("", "mostly_replaced")),
        # a prompt may be a link: "<url>" is a message the bot can be sent
        ("https://kino.ru/tickets", False, ("<url>", None)),
    ],
)
def test_clean_drops_a_reply_cleaning_mostly_replaced(raw, reply, expected):
    cleaner = Cleaner(CleanConfig.from_flags(on=["dates", "domains"]))
    assert cleaner.clean(raw, reply=reply) == expected


def test_mostly_replaced_counts_words_not_characters():
    cleaner = Cleaner(CleanConfig.from_flags(on=["dates"], placeholders=False))
    # a long e-mail is one word of three; a date and a time, three words of seven
    assert cleaner.clean("Пиши на ivan.petrov.the.longest@example.com") == ("Пиши на", None)
    assert cleaner.clean("Встреча 9 мая в 17:20 у входа") == ("Встреча в у входа", None)
    assert cleaner.clean("9 мая в 17:20") == ("", "mostly_replaced")


def test_defaults_and_flags():
    assert set(STEPS) - DEFAULT_STEPS == {"emoji", "dates", "domains"}
    assert CleanConfig().steps == DEFAULT_STEPS
    config = CleanConfig.from_flags(off=["links", "phones"], on=["emoji", "dates"])
    assert config.steps == (DEFAULT_STEPS - {"links", "phones"}) | {"emoji", "dates"}
    with pytest.raises(
        ConfigError,
        match=r"unknown cleaning step\(s\) nope; the steps are: markup, headers, emails",
    ):
        CleanConfig.from_flags(off=["nope"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_chars": -1}, "--min-chars -1: must be a whole number >= 0"),
        ({"max_chars": 5, "min_chars": 10}, "--max-chars 5 is below --min-chars 10"),
        ({"dedup": "fuzzy"}, "--dedup 'fuzzy': must be one of normalized, exact, off"),
    ],
)
def test_config_errors_name_the_flag(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CleanConfig(**kwargs)


def test_tidy_whitespace():
    assert tidy("  a \t b\r\n\r\n\r\n\n c\xa0d  \n") == "a b\n\nc d"
    assert tidy("уже чисто") == "уже чисто"


def _sample(reply: str, prompt: str = "вопрос") -> Sample:
    return Sample((("user", prompt), ("assistant", reply)), "s")


def test_length_bounds_count_reply_characters():
    cleaner = Cleaner(CleanConfig(min_chars=3, max_chars=5))
    kept = [r for r in ("да", "ага", "пятьб", "шестьб") if cleaner.bounded(_sample(r))]
    assert kept == ["ага", "пятьб"]
    assert cleaner.counts.dropped == {"too_short": 1, "too_long": 1}
    unbounded = Cleaner(CleanConfig(min_chars=0, max_chars=0))
    assert unbounded.bounded(_sample("")) and unbounded.bounded(_sample("x" * 10**5))


@pytest.mark.parametrize(
    ("mode", "kept", "dropped"),
    [
        ("normalized", [0, 1, 4], {"duplicate": 1, "near_duplicate": 2}),
        ("exact", [0, 1, 2, 4, 5], {"duplicate": 1}),
        ("off", [0, 1, 2, 3, 4, 5], {}),
    ],
)
def test_duplicates(mode, kept, dropped):
    replies = ["Привет!", "Пока", "привет", "Привет!", "Ещё", "ПРИВЕТ..."]
    keys = [Cleaner.keys(_sample(r)) for r in replies]
    exact = np.array([k[0] for k in keys], dtype=np.uint64)
    normal = np.array([k[1] for k in keys], dtype=np.uint64)
    counts = Counts()
    keep = duplicates(exact, normal, mode, counts)
    assert np.flatnonzero(keep).tolist() == kept
    assert counts.dropped == dropped


def test_normalized_key_ignores_case_punctuation_spaces_and_yo():
    a = Cleaner.keys(_sample("Ещё  раз, Ёлка!"))
    b = Cleaner.keys(_sample("еще раз елка"))
    assert a[0] != b[0] and a[1] == b[1]
    # but the role of a turn matters
    swapped = Cleaner.keys(Sample((("assistant", "вопрос"), ("user", "Ещё раз, Ёлка!")), "s"))
    assert swapped[1] != a[1]
