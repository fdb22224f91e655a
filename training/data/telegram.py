"""Telegram Desktop export -> chat samples in which the persona is the assistant.

Reads one chat's `result.json` or a full-account export (telegram_export.py streams it, so
memory stays at a few hundred KB whatever the file's size), in two passes:
1. a survey of each chat: who wrote text, the signatures (signatures.py), the letters of the
   persona's messages;
2. the samples, emitted as messages come.

Whose words: `--persona` (a sender's name or from_id), else, by chat, the channel itself
(every post of a channel is from it), Saved Messages' owner, or the owner of a full-account
export.

Each chat is read one of two ways (`--mode`, default auto):
- dialogue: the persona answers others (a personal chat, a group);
- posts: the persona has no one to answer. A channel, a Saved Messages export, or an export
  in which no one but the persona wrote text: each of the persona's messages (forwards too:
  what a channel reposts it publishes) becomes [user: --prompt, assistant: the post], its
  own session. The default prompt is in the posts' language: "Напиши пост." when most of
  the letters of the persona's posts are Cyrillic, else "Write a post." (neutral: the
  importer cannot tell jokes from news; `--prompt "Расскажи анекдот."` says it). The
  summary names each chat read so.

What happens to each message, in order:
1. service messages (joins, pins, calls) are skipped;
2. `text`, a string or a list of strings and entity objects, is joined into plain text, its
   signatures (a line or link in most of its sender's messages in the chat) are cut, and it
   is cleaned (clean.py); a sticker without text becomes its emoji; other media without
   text is dropped, or becomes `<photo>`, `<voice>`, ... with `--media placeholder`;
3. a forwarded message keeps its text but never its original sender's name (the `mentions`
   step also removes that name, in any case, from later texts) and, in a dialogue, counts
   as someone else's words;
4. in a dialogue, the persona's messages are `assistant`, everyone else's `user`;
   consecutive messages of one side merge into one turn, joined by a newline;
5. a pause longer than `--gap-minutes` starts a new session, unless the message replies to
   one of the current session (replies hold a conversation together);
6. each session is cut into samples of at most `--max-turns` turns that start with a user
   turn and end with the persona's reply. A session the persona opens by replying to an
   older message gets that message as its prompt; otherwise the opening is dropped.

Example: `balabol data telegram --input ChatExport/result.json --name me --persona "Anna"`
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from balabol.errors import ConfigError, DataError
from training.data import language, signatures
from training.data.clean import Cleaner
from training.data.sample import Sample
from training.data.telegram_export import (
    Chat,
    Export,
    export_file,
    media_kind,
    stream,
    text_of,
    timestamp,
)

Media = Literal["drop", "placeholder"]
MEDIA_MODES: tuple[str, ...] = ("drop", "placeholder")
Mode = Literal["auto", "dialogue", "posts"]
MODES: tuple[str, ...] = ("auto", "dialogue", "posts")
REPLY_MEMORY = 1000  # recent messages kept per chat, to follow replies to them

# Chats whose messages are posts of one author: Telegram's `type`.
CHANNELS = frozenset({"public_channel", "private_channel"})
SAVED = "saved_messages"
# The prompt before each post when --prompt is not given, by the posts' language.
POST_PROMPTS = {"ru": "Напиши пост.", "en": "Write a post."}
_NOTES = 5  # chats named in the summary's note; more are counted


@dataclass(frozen=True)
class TelegramConfig:
    # The docstrings are the help of `balabol data telegram`'s flags.
    persona: str | None = None
    """whose messages the bot learns: a sender's name or from_id ("user123" or "123") (default: a channel itself, else the owner of Saved Messages or of a full-account export)"""
    mode: Mode = "auto"
    """dialogue: the persona answers others; posts: each of the persona's messages is a sample after --prompt; auto: posts for a channel, a Saved Messages export, and an export where only the persona wrote text"""
    prompt: str | None = None
    """the user turn before each post in posts mode (default: "Напиши пост." for Russian posts, else "Write a post."; "" for none)"""
    gap_minutes: float = 60.0
    """a longer pause (minutes) starts a new session"""
    max_turns: int = 8
    """turns per sample (user and assistant): the context window"""
    media: Media = "drop"
    """media without text is dropped, or becomes a placeholder (<photo>, <voice>, ...)"""
    sticker_emoji: bool = True
    """a sticker becomes its emoji (--no-sticker-emoji: a sticker is media)"""
    signatures: bool = True
    """cut signatures: a line or link in most of a sender's messages in a chat (--no-signatures keeps them)"""
    chats: tuple[str, ...] = ()
    """only these chats (names or ids) of a full-account export"""

    def __post_init__(self):
        if not self.gap_minutes > 0:
            raise ConfigError(f"--gap-minutes {self.gap_minutes!r}: must be above 0")
        if not isinstance(self.max_turns, int) or self.max_turns < 2:
            raise ConfigError(
                f"--max-turns {self.max_turns!r}: must be a whole number >= 2 "
                "(a sample needs a user turn and the persona's reply)"
            )
        if self.media not in MEDIA_MODES:
            raise ConfigError(f"--media {self.media!r}: must be one of {', '.join(MEDIA_MODES)}")
        if self.mode not in MODES:
            raise ConfigError(f"--mode {self.mode!r}: must be one of {', '.join(MODES)}")


class _Persona:
    def __init__(self, who: str):
        self.ids = {who} | ({f"user{who}", f"channel{who}"} if who.isdigit() else set())
        self.name = who.casefold()

    def __call__(self, sender_id: str, name: str | None) -> bool:
        return sender_id in self.ids or (name is not None and name.casefold() == self.name)


def _persona_of(chat: Chat, config: TelegramConfig, export: Export) -> _Persona | None:
    """Whose words the chat's samples teach (see the module docstring)."""
    if config.persona:
        return _Persona(config.persona)
    if (chat.type in CHANNELS or chat.type == SAVED) and chat.key.isdigit():
        return _Persona(chat.key)  # a channel's posts are from channel<id>; Saved Messages' <id>
    return _Persona(f"user{export.owner}") if export.owner is not None else None


def _sender(m: dict) -> tuple[str, str | None]:
    return str(m.get("from_id") or m.get("from") or "unknown"), m.get("from")


def _senders(senders: Counter, names: dict[str, str | None]) -> str:
    top = [
        f"{names.get(s) or '(no name)'!r} ({s}): {n} message{'s' * (n != 1)}"
        for s, n in senders.most_common(20)
    ]
    more = len(senders) - len(top)
    return "; ".join(top) + (f"; and {more} more" if more > 0 else "") or "none"


# --- the first pass: what each chat is ---------------------------------------------------------


@dataclass
class _Plan:
    """What the survey learned about one chat, and how the second pass reads it."""

    chat: Chat
    persona: _Persona | None
    persona_messages: int = 0
    persona_texts: int = 0  # the persona's messages with text
    other_texts: int = 0  # everyone else's
    letters: Counter = field(default_factory=Counter)  # "ru"/"en" -> letters in the persona's
    repeats: signatures.Repeats | None = None
    signatures: frozenset[int] = frozenset()
    posts: bool = False
    why: str = ""  # why it is read as posts, for the summary
    samples: int = 0

    def done(self) -> None:
        """The chat's messages are all counted: keep its signatures, not its counters."""
        if self.repeats is not None:
            self.signatures, self.repeats = self.repeats.signatures(), None


def _selected(chat: Chat, wanted: set[str]) -> bool:
    return not wanted or chat.key in wanted or chat.name in wanted


def _survey(
    path: Path, config: TelegramConfig, export: Export
) -> tuple[dict[int, _Plan], Counter, dict]:
    """The first pass: a plan per chat (by its place in the export), and every sender."""
    plans: dict[int, _Plan] = {}
    senders: Counter = Counter()
    names: dict[str, str | None] = {}
    wanted = set(config.chats)
    plan: _Plan | None = None
    for chat, m in stream(path, export):
        if not isinstance(m, dict):
            raise DataError(f"{path}: a message must be a JSON object, found {m!r:.60}")
        if plan is None or plan.chat != chat:
            if plan is not None:
                plan.done()
            plan = plans[chat.n] = _Plan(chat, _persona_of(chat, config, export))
            plan.repeats = signatures.Repeats() if config.signatures else None
        if not _selected(chat, wanted) or m.get("type", "message") != "message":
            continue
        timestamp(m, path)  # an unreadable date is an error before any sample is made
        sender, name = _sender(m)
        senders[sender] += 1
        names[sender] = name
        is_persona = plan.persona is not None and plan.persona(sender, name)
        plan.persona_messages += is_persona
        value = m.get("text")
        if not text_of(value).strip():
            continue
        if plan.repeats is not None:
            plan.repeats.add(sender, value)
        if is_persona:
            plan.persona_texts += 1
            plan.letters.update(language.letters(text_of(value)))
        else:
            plan.other_texts += 1
    if plan is not None:
        plan.done()
    _decide(plans, config, export)
    return plans, senders, names


def _decide(plans: dict[int, _Plan], config: TelegramConfig, export: Export) -> None:
    """Which chats are posts: with --mode auto, a channel; Saved Messages exported alone; and
    any chat of an export in which no one but the persona wrote text (a full-account export's
    Saved Messages, among chats with others, stay a dialogue: the owner's notes to self)."""
    alone = not any(p.other_texts for p in plans.values())
    for plan in plans.values():
        if config.mode == "posts":
            plan.posts, plan.why = True, "--mode posts"
        elif config.mode == "dialogue":
            continue
        elif plan.chat.type in CHANNELS:
            plan.posts, plan.why = True, "a channel"
        elif plan.chat.type == SAVED and export.layout == "chat":
            plan.posts, plan.why = True, "Saved Messages"
        elif alone and plan.persona_texts:
            plan.posts, plan.why = True, "only the persona wrote text"


def _language(plans: dict[int, _Plan]) -> str:
    """The language of the persona's posts (language.py)."""
    return language.language(sum((p.letters for p in plans.values() if p.posts), Counter()))


def _notes(plans: dict[int, _Plan], prompt: str, lang: str | None) -> list[str]:
    """What the summary says about the chats read as posts."""
    posts = [p for p in plans.values() if p.posts and p.samples]
    as_what = f"samples [user: {prompt!r}, assistant: the post]" if prompt else "samples, no prompt"
    why = f" (the posts are in {language.NAMES[lang]}; --prompt sets another)" if lang else ""
    notes = [
        f"{p.chat.name or p.chat.key!r} ({p.why}): the persona has no one to answer, so its "
        f"{p.samples} post{'s' * (p.samples != 1)} became {as_what}{why}"
        for p in posts[:_NOTES]
    ]
    if len(posts) > _NOTES:
        notes.append(f"and {len(posts) - _NOTES} more chats were read as posts")
    return notes


# --- the second pass: sessions and samples ------------------------------------------------------


class _Conversation:
    """One chat's messages in order -> sessions -> samples, emitted as soon as they are
    complete, so a chat with no pause holds one window in memory, not the whole chat."""

    def __init__(self, chat: Chat, config: TelegramConfig, cleaner: Cleaner):
        self.chat, self.config, self.counts = chat, config, cleaner.counts
        self.window: list[tuple[str, list[str]]] = []  # the sample being built: (role, texts)
        self.session: int | None = None  # the current session's number
        self.sessions = 0
        self.last = 0.0
        self.skipping = False  # inside an opening reply that has no prompt
        # recent messages, to follow replies: id -> (session, text if it was a user's)
        self.recent: OrderedDict[int, tuple[int, str | None]] = OrderedDict()

    def add(
        self, role: str, text: str, when: float, msg_id: int | None, reply_to: int | None
    ) -> Iterator[Sample]:
        replied = self.recent.get(reply_to) if reply_to is not None else None
        paused = self.session is not None and when - self.last > self.config.gap_minutes * 60
        held = replied is not None and replied[0] == self.session  # replies hold a session
        if paused and not held:
            yield from self.close()
        if self.session is None:
            self.session, self.sessions = self.sessions, self.sessions + 1
            if role == "assistant":  # the persona opens: with the message it answers, if any
                if replied is not None and replied[1] is not None:
                    self.window.append(("user", [replied[1]]))
                else:
                    self.skipping = True
                    self.counts.drop("no_prompt")
        self.last = when
        if msg_id is not None:
            self.recent[msg_id] = (self.session, text if role == "user" else None)
            if len(self.recent) > REPLY_MEMORY:
                self.recent.popitem(last=False)

        if self.skipping and role == "assistant":
            return
        self.skipping = False
        if self.window and self.window[-1][0] == role:  # one side's messages merge
            self.window[-1][1].append(text)
            return
        # turns alternate, so a full window ends on a reply and the next starts with a user
        if role == "user" and len(self.window) >= self.config.max_turns - 1:
            yield self._sample()
        self.window.append((role, [text]))

    def _sample(self) -> Sample:
        window, self.window = self.window, []
        turns = tuple((role, "\n".join(texts)) for role, texts in window)
        return Sample(turns, f"{self.chat.key}:{self.session}")

    def close(self) -> Iterator[Sample]:
        if self.window and self.window[-1][0] == "user":
            self.counts.drop("no_reply")
            self.window.pop()
        if self.window:
            yield self._sample()
        self.session, self.skipping = None, False


# --- the importer -----------------------------------------------------------------------------


def read(path: Path, config: TelegramConfig, cleaner: Cleaner) -> Iterator[Sample]:
    """Samples of a Telegram Desktop export (see the module docstring for every rule)."""
    path = export_file(path)
    counts = cleaner.counts
    export = Export()
    plans, senders, names = _survey(path, config, export)
    if not any(p.persona_messages for p in plans.values()):
        if config.persona:
            problem = f"no message in {path} is from persona {config.persona!r}"
        else:
            problem = f"{path} does not say whose account it is, so there is no default persona"
        raise DataError(
            f"{problem}. Senders found: {_senders(senders, names)}. "
            "Pass --persona with one of these names or ids"
        )
    lang = None if config.prompt is not None else _language(plans)
    prompt = config.prompt if config.prompt is not None else POST_PROMPTS[lang]
    wanted = set(config.chats)
    conversation: _Conversation | None = None
    plan: _Plan | None = None

    for chat, m in stream(Path(path), Export()):
        counts.read["messages"] += 1
        if plan is None or plan.chat != chat:
            if conversation is not None:
                yield from conversation.close()
            plan = plans[chat.n]
            conversation = None if plan.posts else _Conversation(chat, config, cleaner)
        if not _selected(chat, wanted):
            counts.drop("other_chat")
            continue
        if m.get("type", "message") != "message":
            counts.drop("service")
            continue
        sender, name = _sender(m)
        is_persona = plan.persona is not None and plan.persona(sender, name)
        if plan.posts and not is_persona:
            counts.drop("not_persona")
            continue
        when = timestamp(m, path)
        forwarded = m.get("forwarded_from")
        if forwarded:
            cleaner.add_name(forwarded)
        role = "assistant" if is_persona and (plan.posts or not forwarded) else "user"

        raw, cut = signatures.strip(sender, m.get("text"), plan.signatures)
        if cut:
            counts.changed["signatures"] += cut
        if raw.strip():
            text, why = cleaner.clean(raw, reply=role == "assistant")
        else:  # no text, or only a signature
            text, why = "", "cleaned_away" if cut else None
        kind = media_kind(m)
        if not text and kind == "sticker" and config.sticker_emoji and not why:
            emoji = cleaner.text(m.get("sticker_emoji") or "")
            if emoji:  # the emoji stands for the sticker
                text, kind = emoji, None
        if not text:
            if kind and config.media == "placeholder":
                text = f"<{kind}>"
            elif kind:
                counts.drop("media")
                continue
            else:
                counts.drop(why or "empty")
                continue
        elif kind and config.media == "placeholder":
            text = f"<{kind}> {text}"

        if plan.posts:
            plan.samples += 1
            turns = (("user", prompt), ("assistant", text)) if prompt else (("assistant", text),)
            yield Sample(turns, f"{chat.key}:post{m.get('id', counts.read['messages'])}")
        else:
            yield from conversation.add(role, text, when, m.get("id"), m.get("reply_to_message_id"))

    if conversation is not None:
        yield from conversation.close()
    counts.notes.extend(_notes(plans, prompt, lang))
