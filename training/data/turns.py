"""Dialogues written as text, the common shape of Russian dialogue corpora (like Koziev's
dialogues from jokes): one turn per line after a dash, dialogues separated by blank lines
(one or more).

    - Доктор, я буду жить?
    - А смысл?


    - Алло, это прачечная?
    - Нет, это Министерство культуры.

Two speakers alternate, and every dialogue ends on a reply the bot learns: a dialogue of an
even number of turns starts with the user; in one of an odd number, the first turn is dropped
(odd_first_turn) and the user starts at the second. So the last turn, often a joke's
punchline, is always the assistant's. Like a Telegram session, a dialogue is cut into samples
of at most `--max-turns` turns that start with a user turn and end with a reply: each reply
is learned with the turns before it in its sample as context (training puts the loss on
every assistant turn, so each reply is learned once).

A turn starts with "-", "–" or "—" and a space. A line without a dash continues the turn
before it; one before a dialogue's first turn (a narrator's "Муж жене:") is dropped
(not_a_turn). A turn that cleaning drops (empty, or a reply that was mostly a date or a
link) ends its dialogue there, since who speaks next would be lost: the turns after it are
dropped (cut_off), and so is a user turn left last (no_reply). The file is read as a stream, one dialogue in memory, decompressed as
it is read when its name ends in .gz or .xz.

Example: `balabol data dialogues --input koziev_anekdot_dialogues.txt.xz --name anekdots`
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from balabol.errors import DataError
from training.data.clean import Cleaner
from training.data.sample import Sample, open_text

_TURN = re.compile(r"[ \t]*[-–—](?:[ \t]+|$)")
ROLES = ("user", "assistant")


def dialogues(path: Path, cleaner: Cleaner) -> Iterator[list[str]]:
    """Each dialogue's raw turns, streamed."""
    counts = cleaner.counts
    turns: list[str] = []
    with open_text(path, desc=path.name) as f:
        for raw in f:
            line = raw.rstrip("\r\n")
            if not line.strip():
                if turns:
                    yield turns
                    turns = []
                continue
            dash = _TURN.match(line)
            if dash:
                turns.append(line[dash.end() :])
            elif turns:
                turns[-1] += "\n" + line
            else:
                counts.drop("not_a_turn")
    if turns:
        yield turns


def _samples(turns: list[tuple[str, str]], max_turns: int, session: str) -> Iterator[Sample]:
    """Samples of at most max_turns alternating turns, each ending with a reply (the caller
    has dropped a last user turn)."""
    window: list[tuple[str, str]] = []
    for role, text in turns:
        if role == "user" and len(window) >= max_turns - 1:
            yield Sample(tuple(window), session)
            window = []
        window.append((role, text))
    if window:
        yield Sample(tuple(window), session)


def read(path: Path, max_turns: int, cleaner: Cleaner) -> Iterator[Sample]:
    """Samples of a "- " dialogue text (see the module docstring)."""
    counts = cleaner.counts
    for n, raw_turns in enumerate(dialogues(path, cleaner), 1):
        counts.read["dialogues"] += 1
        counts.read["turns"] += len(raw_turns)
        if len(raw_turns) % 2:  # so the last turn is a reply
            counts.drop("odd_first_turn")
            raw_turns = raw_turns[1:]
        turns: list[tuple[str, str]] = []
        for i, raw in enumerate(raw_turns):
            role = ROLES[i % 2]
            text, why = cleaner.clean(raw, reply=role == "assistant")
            if why:
                counts.drop(why)
                if len(raw_turns) > i + 1:
                    counts.drop("cut_off", len(raw_turns) - i - 1)
                break
            turns.append((role, text))
        if turns and turns[-1][0] == "user":
            counts.drop("no_reply")
            turns.pop()
        yield from _samples(turns, max_turns, f"dialogue:{n}")
    if not counts.read["turns"]:
        raise DataError(
            f"{path} has no turns: no line starts with '- '. A dialogue text has one turn per "
            "line after a dash and blank lines between dialogues; for plain texts (one per "
            "line or block) use `balabol data corpus`"
        )
