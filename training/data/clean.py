"""Cleaning: a registry of text steps, each switchable and counted, then length bounds and
duplicate removal on whole samples. Letters are never touched: Russian (ё included), case
and punctuation stay as written.

Text steps, in the order they run (`--no-NAME` turns a default one off, `--NAME` turns an
optional one on):

    markup    HTML tags and entities, BBCode, **markdown** remnants   -> kept inner text
    headers   "Anna, [23.08.2023 13:11]" lines of copied messages     -> removed
    emails    a.b@example.com                                          -> <email>
    links     https://…, www.…, t.me/…, example.ru/path                -> <url>
    domains   a bare domain name: Gazeta.ru, habr.com        (optional) -> <url>
    mentions  @username, and the names of forwarded-from senders       -> <user>
              (in any case: "Золотые Анекдоты" also takes "золотые анекдоты")
    hashtags  #tag                                                     -> removed
    dates     2023-08-23, 23.08.2023, 9 мая, Aug 23 / 17:20  (optional) -> <date> / <time>
    cards     13-19 digits in groups of four (card-like numbers)       -> <card>
    phones    +7 (999) 123-45-67, 8-800-555-35-35, +1 202 555 0143     -> <phone>
              (10 to 15 digits; shorter local numbers are kept)
    emoji     emoji, flags, skin tones, keycaps              (optional) -> removed

Metadata goes, content stays: a message's own date is never in its text, so a date, a time
or a site's name inside a text is something its author wrote ("9 мая", "в 17:20", "прочёл на
Gazeta.ru") and is kept unless `--dates` / `--domains` ask otherwise. PII (emails, links,
mentions, names, cards, phones) becomes a placeholder, so the model still learns that
"something went here"; `--no-placeholders` removes it instead. Whitespace is always tidied
(runs of spaces to one, at most one blank line, ends stripped).

A reply is dropped (counted as `mostly_replaced`) when the steps that replace (emails, links,
domains, mentions, dates, cards, phones) took more than half of its words: a reply that
was only a date or a link would teach the model to answer "<date>". Prompts keep such
words: "<url>" is a message the bot can be sent. `Cleaner.clean` applies this rule for
every importer; a text emptied by cleaning is dropped as `cleaned_away`.

Sample filters: replies (assistant characters) outside `--min-chars`..`--max-chars` are
dropped (0 turns a bound off), and duplicates: `--dedup exact` drops repeats of a whole
sample, `--dedup normalized` (default) also repeats differing only in case, punctuation,
spaces and ё/е. Duplicates are found after reading, over 8-byte hashes, so memory stays
at ~16 bytes per sample.

Example: `balabol data telegram --input result.json --name me --persona Anna --no-links --emoji`
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from balabol.errors import ConfigError
from training.data.sample import Counts, Sample

if TYPE_CHECKING:
    import numpy as np

Dedup = Literal["normalized", "exact", "off"]
DEDUP_MODES: tuple[str, ...] = ("normalized", "exact", "off")


@dataclass(frozen=True)
class Step:
    name: str
    help: str
    apply: Callable[[str, Cleaner], tuple[str, int]]  # (text, cleaner) -> (text, replacements)
    default: bool = True
    replaces: bool = False  # puts a placeholder for words (PII): counts towards mostly_replaced


STEPS: dict[str, Step] = {}  # in the order they run


def step(name: str, help: str, *, default: bool = True, replaces: bool = False):
    """Register a text step: a function (text, cleaner) -> (new text, replacements made)."""

    def register(fn: Callable[[str, Cleaner], tuple[str, int]]):
        STEPS[name] = Step(name, help, fn, default, replaces)
        return fn

    return register


def _sub(
    pattern: re.Pattern[str],
    placeholder: str,
    text: str,
    cleaner: Cleaner,
    *,
    accept: Callable[[str], bool] | None = None,
) -> tuple[str, int]:
    """Replace every (accepted) match by the placeholder, or by nothing without placeholders."""
    n = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal n
        if accept is not None and not accept(m.group()):
            return m.group()
        n += 1
        return placeholder if cleaner.config.placeholders else ""

    return pattern.sub(repl, text), n


# --- the steps ------------------------------------------------------------------------------

_MARKUP_HINT = re.compile(r"[<\[*_~`&]")
_ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|[A-Za-z]{2,8});")
_MARKUP = (
    (re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>"), ""),  # <b>, </i>, <br/>
    (re.compile(r"\[/?(?:b|i|u|s|url|quote|code|img|spoiler|size|color)(?:=[^\]]*)?\]", re.I), ""),
    (re.compile(r"\[([^\]\n]+)\]\((\S+?)\)"), r"\1 \2"),  # [text](url): the url goes to `links`
    (re.compile(r"\*\*(.+?)\*\*|__(.+?)__|~~(.+?)~~", re.S), None),  # **bold** __it__ ~~del~~
    (re.compile(r"```[A-Za-z0-9_+-]*"), ""),  # code fences
)


@step("markup", "HTML tags and entities, BBCode and markdown remnants (inner text kept)")
def _markup(text: str, cleaner: Cleaner) -> tuple[str, int]:
    if not _MARKUP_HINT.search(text):  # the common case, checked at C speed
        return text, 0
    n = 0
    if "&" in text:
        n += len(_ENTITY.findall(text))
        text = _ENTITY.sub(lambda m: html.unescape(m.group()), text)
    for pattern, repl in _MARKUP:
        if repl is None:  # the group that matched is the inner text
            text, k = pattern.subn(lambda m: next(g for g in m.groups() if g is not None), text)
        else:
            text, k = pattern.subn(repl, text)
        n += k
    return text, n


# "Anna, [23.08.2023 13:11]" or "Ben, [1/1/70, 1:00 AM]": the header Telegram Desktop puts
# above each message copied as text; metadata pasted into a message, not its content
_HEADER = re.compile(
    r"^[^\S\n]*[^\n\[\]]{1,64}, \[[^\]\n]{0,24}\d{1,2}:\d{2}[^\]\n]{0,12}\][^\S\n]*(?:\n|\Z)", re.M
)


@step("headers", "'Name, [date time]' header lines of messages copied as text (removed)")
def _headers(text: str, cleaner: Cleaner) -> tuple[str, int]:
    if ", [" not in text:
        return text, 0
    return _HEADER.subn("", text)


_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}(?!\w)")


@step("emails", "e-mail addresses -> <email>", replaces=True)
def _emails(text: str, cleaner: Cleaner) -> tuple[str, int]:
    if "@" not in text:
        return text, 0
    return _sub(_EMAIL, "<email>", text, cleaner)


_TLDS = "com|org|net|ru|su|ua|by|kz|io|me|info|dev|app|ly|gg|tv|co|рф"
_DOMAIN = rf"(?<![\w@./-])(?:[a-z0-9-]+\.)+(?:{_TLDS})"
_LINK = re.compile(r"(?:\bhttps?://|\bwww\.)\S+" rf"|{_DOMAIN}/\S*", re.IGNORECASE)
_BARE_DOMAIN = re.compile(rf"{_DOMAIN}(?![\w-])(?:/\S*)?", re.IGNORECASE)
_LINK_HINT = re.compile(rf"://|www\.|\.(?:{_TLDS})(?![\w-])", re.IGNORECASE)
_TRAILING = re.compile(r"[.,!?;:)\]»\"'…]+$")  # sentence punctuation after a link is not the link


def _urls(pattern: re.Pattern[str], text: str, cleaner: Cleaner) -> tuple[str, int]:
    if not _LINK_HINT.search(text):
        return text, 0
    n = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal n
        n += 1
        tail = _TRAILING.search(m.group())
        return ("<url>" if cleaner.config.placeholders else "") + (tail.group() if tail else "")

    return pattern.sub(repl, text), n


@step("links", "links (http, www, t.me/…, x.ru/path) -> <url>", replaces=True)
def _links(text: str, cleaner: Cleaner) -> tuple[str, int]:
    return _urls(_LINK, text, cleaner)


@step(
    "domains",
    "bare domain names (Gazeta.ru) -> <url> (off by default: a site named in a text is content)",
    default=False,
    replaces=True,
)
def _domains(text: str, cleaner: Cleaner) -> tuple[str, int]:
    return _urls(_BARE_DOMAIN, text, cleaner)


_MENTION = re.compile(r"(?<![\w@])@[A-Za-z][A-Za-z0-9_]{2,31}(?!\w)")


@step("mentions", "@usernames and forwarded-from sender names (any case) -> <user>", replaces=True)
def _mentions(text: str, cleaner: Cleaner) -> tuple[str, int]:
    n = 0
    if "@" in text:
        text, n = _sub(_MENTION, "<user>", text, cleaner)
    names = cleaner.names_pattern()
    if names is not None:
        text, k = _sub(names, "<user>", text, cleaner)
        n += k
    return text, n


_HASHTAG = re.compile(r"(?<![\w#&])#(?=\w*[^\W\d_])\w+")


@step("hashtags", "#hashtags (removed)")
def _hashtags(text: str, cleaner: Cleaner) -> tuple[str, int]:
    if "#" not in text:
        return text, 0
    return _HASHTAG.subn("", text)


_RU_MONTHS = (
    "январ[ья]|феврал[ья]|марта?|апрел[ья]|ма[йя]|июн[ья]|июл[ья]|августа?|"
    "сентябр[ья]|октябр[ья]|ноябр[ья]|декабр[ья]"
)
_EN_MONTHS = (
    "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    "sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_DATE = re.compile(
    r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2})?)?\b"  # ISO, with a time maybe
    r"|\b\d{1,2}[./]\d{1,2}[./](?:\d{4}|\d{2})\b"  # 23.08.2023, 23/08/23
    rf"|\b\d{{1,2}}\s+(?:{_RU_MONTHS})(?![а-яё])(?:\s+\d{{4}}(?:\s*(?:года|год|г\.))?)?"
    rf"|\b\d{{1,2}}\s+(?:{_EN_MONTHS})\b\.?(?:,?\s+\d{{4}}\b)?"  # 23 August 2023
    rf"|\b(?:{_EN_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?\b(?:,?\s+\d{{4}}\b)?",  # Aug 23, 2023
    re.IGNORECASE,
)
_TIME = re.compile(r"\b(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?(?:\s?[ap]\.?m\b\.?)?", re.I)


@step(
    "dates",
    "dates -> <date> and times of day -> <time> (off by default: a date in a text is content)",
    default=False,
    replaces=True,
)
def _dates(text: str, cleaner: Cleaner) -> tuple[str, int]:
    if not _DIGIT.search(text):  # every date and time has a digit
        return text, 0
    text, n = _sub(_DATE, "<date>", text, cleaner)
    text, k = _sub(_TIME, "<time>", text, cleaner)
    return text, n + k


_DIGIT = re.compile(r"\d")


def _digits(s: str) -> int:
    return sum(c.isdigit() for c in s)


_CARD = re.compile(r"(?<![\d-])\d{4}(?:[ -]?\d{4}){2}[ -]?\d{1,7}(?!\d)")


@step("cards", "card-like numbers (13-19 digits) -> <card>", replaces=True)
def _cards(text: str, cleaner: Cleaner) -> tuple[str, int]:
    if not _DIGIT.search(text):
        return text, 0
    return _sub(_CARD, "<card>", text, cleaner, accept=lambda s: 13 <= _digits(s) <= 19)


_PHONE = re.compile(
    r"(?<![\w+])(?:(?:\+\d{1,3}|8)[\s.-]?)?(?:\(\d{3,5}\)|\d{3,5})"
    r"[\s.-]?\d{1,4}[\s.-]?\d{2}[\s.-]?\d{2}(?!\w)"
)


@step("phones", "phone numbers (10-15 digits) -> <phone>", replaces=True)
def _phones(text: str, cleaner: Cleaner) -> tuple[str, int]:
    if not _DIGIT.search(text):
        return text, 0
    return _sub(_PHONE, "<phone>", text, cleaner, accept=lambda s: 10 <= _digits(s) <= 15)


_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\U0001f1e6-\U0001f1ff\u2600-\u27bf\u2300-\u23ff\u2b00-\u2bff"
    "\ufe0f\u200d\u20e3\U000e0020-\U000e007f]+"
)


@step("emoji", "emoji (removed; off by default, --emoji turns it on)", default=False)
def _emoji(text: str, cleaner: Cleaner) -> tuple[str, int]:
    if not text or max(text) < "\u200d":  # all of Latin and Cyrillic lie below every emoji
        return text, 0
    return _EMOJI.subn("", text)


DEFAULT_STEPS = frozenset(name for name, s in STEPS.items() if s.default)


# --- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CleanConfig:
    # The docstrings are the help of `balabol data`'s flags (each step's is in STEPS).
    steps: frozenset[str] = DEFAULT_STEPS
    """text steps that run (see STEPS)"""
    placeholders: bool = True
    """PII becomes <url>, <phone>, ... (--no-placeholders: removed outright)"""
    dedup: Dedup = "normalized"
    """drop repeated samples: normalized (also case, punctuation, spaces), exact, off"""
    min_chars: int = 1
    """drop samples whose replies are shorter, in characters (0: no bound)"""
    max_chars: int = 2000
    """drop samples whose replies are longer, in characters (0: no bound)"""

    def __post_init__(self):
        unknown = sorted(set(self.steps) - STEPS.keys())
        if unknown:
            raise ConfigError(
                f"unknown cleaning step(s) {', '.join(unknown)}; the steps are: {', '.join(STEPS)}"
            )
        if self.dedup not in DEDUP_MODES:
            raise ConfigError(f"--dedup {self.dedup!r}: must be one of {', '.join(DEDUP_MODES)}")
        for flag, value in (("--min-chars", self.min_chars), ("--max-chars", self.max_chars)):
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{flag} {value!r}: must be a whole number >= 0 (0 = no bound)")
        if self.max_chars and self.max_chars < self.min_chars:
            raise ConfigError(
                f"--max-chars {self.max_chars} is below --min-chars {self.min_chars}: "
                "every sample would be dropped"
            )

    @classmethod
    def from_flags(
        cls, *, off: Iterable[str] = (), on: Iterable[str] = (), **kwargs
    ) -> CleanConfig:
        """The default steps, minus `off`, plus `on` (the CLI's --no-NAME and --emoji)."""
        off, on = set(off), set(on)
        unknown = sorted((off | on) - STEPS.keys())
        if unknown:
            raise ConfigError(
                f"unknown cleaning step(s) {', '.join(unknown)}; the steps are: {', '.join(STEPS)}"
            )
        return cls(steps=frozenset((DEFAULT_STEPS - off) | on), **kwargs)


# --- applying it -----------------------------------------------------------------------------

_UNTIDY = re.compile(r"[\r\t\xa0\u2007\u202f]|  |\n | \n|\n\n\n")
_SPACES = re.compile(r"[ \t\xa0\u2007\u202f]+")
_AROUND_NEWLINE = re.compile(r" ?\n ?")
_BLANK_LINES = re.compile(r"\n{3,}")
_SPACE_BEFORE_PUNCT = re.compile(r" +([.,!?;:])")
_NOT_WORD = re.compile(r"[\W_]+")
_REMOVING = frozenset({"headers", "hashtags", "emoji"})  # steps that delete with placeholders on
_PLACEHOLDER = re.compile(r"<(?:email|url|user|date|time|card|phone)>")
_WORD_CHAR = re.compile(r"\w")


def words(text: str) -> int:
    """Words of a text, placeholders not counted: whitespace-separated pieces with a letter or
    a digit outside any placeholder ("<url>," is none, "Пиши" one)."""
    return sum(1 for w in text.split() if _WORD_CHAR.search(_PLACEHOLDER.sub("", w)))


def tidy(text: str) -> str:
    """Whitespace only: CRLF to LF, runs of spaces to one, at most one blank line, stripped."""
    if not _UNTIDY.search(text):
        return text.strip()
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    text = _AROUND_NEWLINE.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


class Cleaner:
    """Runs the configured steps on texts and the filters on samples, counting into `counts`."""

    def __init__(self, config: CleanConfig | None = None, counts: Counts | None = None):
        self.config = config or CleanConfig()
        self.counts = counts if counts is not None else Counts()
        self._steps = [s for name, s in STEPS.items() if name in self.config.steps]
        self._names: set[str] = set()
        self._names_re: re.Pattern[str] | None = None

    # names the `mentions` step replaces (Telegram's forwarded_from), learned while reading
    def add_name(self, name: str | None) -> None:
        name = (name or "").strip()
        if len(name) >= 3 and name not in self._names:  # a one- or two-letter name would eat words
            self._names.add(name)
            self._names_re = None

    def names_pattern(self) -> re.Pattern[str] | None:
        if self._names and self._names_re is None:
            alternatives = "|".join(
                re.escape(n) for n in sorted(self._names, key=len, reverse=True)
            )
            # a channel's name is written in any case in its posts ("золотые анекдоты")
            self._names_re = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
        return self._names_re

    def _apply(self, text: str) -> tuple[str, int]:
        """(the text after every enabled step, whitespace tidied; the words it had before the
        first step that replaces took any, or 0 when none did)."""
        removed = False
        before: str | None = None  # the text as the replacing steps found it
        replaced = False
        for s in self._steps:
            if s.replaces and before is None:
                before = text
            text, n = s.apply(text, self)
            if n:
                self.counts.changed[s.name] += n
                removed = removed or not self.config.placeholders or s.name in _REMOVING
                replaced = replaced or s.replaces
        text = tidy(text)
        # a removed word leaves "see ." behind; only then are such spaces ours to fix
        text = _SPACE_BEFORE_PUNCT.sub(r"\1", text) if removed else text
        return text, (words(before) if replaced and before is not None else 0)

    def text(self, text: str) -> str:
        """The text after every enabled step, whitespace tidied."""
        return self._apply(text)[0]

    def clean(self, raw: str, *, reply: bool = True) -> tuple[str, str | None]:
        """(the cleaned text, None) or ("", why it is dropped: a REASONS key). The same rule
        for every importer: a text with nothing in it is `empty`, one cleaning emptied is
        `cleaned_away`, and a reply whose words the replacing steps mostly took is
        `mostly_replaced` (a prompt keeps them)."""
        if not raw.strip():
            return "", "empty"
        text, before = self._apply(raw)
        if not text:
            return "", "cleaned_away"
        if reply and before and 2 * words(text) < before:
            return "", "mostly_replaced"
        return text, None

    def bounded(self, sample: Sample) -> bool:
        """Whether the sample's replies are within --min-chars..--max-chars (counts drops)."""
        n = sample.reply_chars
        if n < self.config.min_chars:
            self.counts.drop("too_short")
            return False
        if self.config.max_chars and n > self.config.max_chars:
            self.counts.drop("too_long")
            return False
        return True

    @staticmethod
    def keys(sample: Sample) -> tuple[int, int]:
        """(exact, normalized) 8-byte hashes of a sample, for `duplicates`."""
        exact = "\x1e".join(f"{r}\x1f{c}" for r, c in sample.messages)
        normal = "\x1e".join(
            f"{r}\x1f{_NOT_WORD.sub('', c.casefold().replace('ё', 'е'))}"
            for r, c in sample.messages
        )
        return hash64(exact), hash64(normal)


def duplicates(exact: np.ndarray, normal: np.ndarray, mode: Dedup, counts: Counts) -> np.ndarray:
    """A keep-mask over samples in reading order: the first of each repeat stays."""
    import numpy as np

    keep = np.ones(len(exact), dtype=bool)
    if mode == "off" or not len(exact):
        return keep
    keep[:] = False
    keep[np.unique(exact, return_index=True)[1]] = True
    if not keep.all():
        counts.drop("duplicate", int((~keep).sum()))
    if mode == "normalized":
        rest = np.flatnonzero(keep)  # ascending: first occurrences stay first
        first = np.zeros(len(rest), dtype=bool)
        first[np.unique(normal[rest], return_index=True)[1]] = True
        keep[rest[~first]] = False
        if (~first).any():
            counts.drop("near_duplicate", int((~first).sum()))
    return keep
