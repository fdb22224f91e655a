"""Signatures: a line or a link that a sender repeats in most of their messages in a chat (a
channel's "Подписаться: t.me/..." under every post, the same `text_link` anchor at the end of
each, "Sent from my phone") is boilerplate, not content. The Telegram importer finds them in
a first pass over the export (`Repeats`) and strips them from every message in the second
(`strip`), counting what it removed as the `signatures` cleaning step.

What is counted, per sender and chat: each distinct line of a message of two lines or more,
and each link, text_link and mention entity (its text and target). One found in more than
half of a sender's messages with text, and in at least MIN_REPEATS of them, is a signature;
it is then removed wherever it stands, so a message that was only the signature is left
empty (and dropped as `cleaned_away`). Lines of one-line messages are not counted: "ок" in
most of someone's messages is an answer, not a signature.

Counting is bounded: a Misra-Gries summary of SUMMARY_SIZE counters per chat (a new item
with the table full takes one off every counter). Its counts are lower bounds, short by at
most 1/(SUMMARY_SIZE + 1) of the items of the chat, so whatever it calls a signature is one;
in a chat with more than ~SUMMARY_SIZE items per message of the sender, a signature can be
missed (and stays in the text, as without this step). Memory: SUMMARY_SIZE counters.

Example: `balabol data telegram --input result.json --name jokes` (`--no-signatures` keeps them)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from training.data.telegram_export import piece_of, text_of

SUMMARY_SIZE = 1024
MIN_REPEATS = 3  # a signature is in at least this many messages (and in more than half)
LINK_ENTITIES = frozenset({"link", "text_link", "mention", "mention_name"})


def _line(line: str) -> str:
    return " ".join(line.split())


def _entities(value) -> Iterator[dict]:
    if isinstance(value, list):
        for part in value:
            if isinstance(part, dict) and part.get("type") in LINK_ENTITIES:
                yield part


def _entity_key(sender: str, entity: dict) -> int:
    # hash() is salted per process, which is fine: both passes run in the same one
    return hash((sender, "entity", str(entity.get("text", "")).strip(), entity.get("href")))


def candidates(sender: str, value) -> set[int]:
    """The keys of what in a message's `text` could be a signature."""
    lines = {key for line in text_of(value).split("\n") if (key := _line(line))}
    keys = {hash((sender, "line", line)) for line in lines} if len(lines) >= 2 else set()
    keys.update(_entity_key(sender, e) for e in _entities(value))
    return keys


class Repeats:
    """The first pass over one chat: what each sender repeats, in bounded memory."""

    def __init__(self, size: int = SUMMARY_SIZE):
        self.size = size
        self.counters: dict[int, list] = {}  # key -> [count (a lower bound), sender]
        self.messages: Counter = Counter()  # sender -> messages with text

    def add(self, sender: str, value) -> None:
        self.messages[sender] += 1
        counters = self.counters
        for key in candidates(sender, value):
            if key in counters:
                counters[key][0] += 1
            elif len(counters) < self.size:
                counters[key] = [1, sender]
            else:  # Misra-Gries: the new item and every counter lose one
                for k in list(counters):
                    counters[k][0] -= 1
                    if not counters[k][0]:
                        del counters[k]

    def signatures(self) -> frozenset[int]:
        return frozenset(
            key
            for key, (count, sender) in self.counters.items()
            if count >= MIN_REPEATS and 2 * count > self.messages[sender]
        )


def strip(sender: str, value, signatures: frozenset[int]) -> tuple[str, int]:
    """(a message's text without its signatures, how many were removed): each signature
    entity, and each signature line with its newline, cut out by position."""
    text = text_of(value)
    if not signatures:
        return text, 0
    cuts: list[tuple[int, int]] = []
    pos = 0
    for part in value if isinstance(value, list) else ():
        piece = piece_of(part)
        is_entity = isinstance(part, dict) and part.get("type") in LINK_ENTITIES
        if is_entity and _entity_key(sender, part) in signatures:
            cuts.append((pos, pos + len(piece)))
        pos += len(piece)
    start = 0
    for line in text.split("\n"):
        end = start + len(line)
        if hash((sender, "line", _line(line))) in signatures:
            cuts.append((start, min(end + 1, len(text))))
        start = end + 1
    if not cuts:
        return text, 0
    kept, at, n = [], 0, 0
    for a, b in sorted(cuts):  # an anchor on a signature line is one signature, not two
        if a >= at:
            kept.append(text[at:a])
            n += 1
        at = max(at, b)
    kept.append(text[at:])
    return "".join(kept), n
