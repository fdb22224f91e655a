"""A plain corpus (jokes, say) -> samples that teach the model to produce such a text.

Entries are one per line (`--separator line`) or blocks separated by blank lines
(`--separator blank`, for texts of several lines). Each becomes

    [user: --prompt, assistant: the entry]       (default prompt: "Tell me a joke.")
    [user: "Tell me a joke about cats", ...]     with --prompt "Tell me a joke about {topic}"
                                                  and entries written as "cats<TAB>the joke"
    [assistant: the entry]                       with --prompt "" (unconditional generation:
                                                  at run time, generate with no user turn)

Each entry is its own session.

Example: `balabol data corpus --input anekdoty.txt --name jokes --separator blank --prompt "Расскажи анекдот"`
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from balabol.errors import ConfigError
from training.data.clean import Cleaner, tidy
from training.data.sample import Sample, open_text, require_file

Separator = Literal["line", "blank"]
SEPARATORS: tuple[str, ...] = ("line", "blank")
DEFAULT_PROMPT = "Tell me a joke."


@dataclass(frozen=True)
class CorpusConfig:
    # The docstrings are the help of `balabol data corpus`'s flags.
    separator: Separator = "line"
    """one entry per line, or entries separated by blank lines"""
    prompt: str = DEFAULT_PROMPT
    """the user turn before each entry ({topic} takes an entry's "topic<TAB>" prefix; "" for none)"""

    def __post_init__(self):
        if self.separator not in SEPARATORS:
            raise ConfigError(
                f"--separator {self.separator!r}: must be one of {', '.join(SEPARATORS)}"
            )

    @property
    def topical(self) -> bool:
        return "{topic}" in self.prompt


def entries(path: Path, separator: Separator) -> Iterator[str]:
    """The corpus's raw entries, streamed."""
    with open_text(path, desc=path.name) as f:
        if separator == "line":
            for line in f:
                if line.strip():
                    yield line.rstrip("\r\n")
            return
        block: list[str] = []
        for line in f:
            if line.strip():
                block.append(line.rstrip("\r\n"))
            elif block:
                yield "\n".join(block)
                block = []
        if block:
            yield "\n".join(block)


def read(path: Path, config: CorpusConfig, cleaner: Cleaner) -> Iterator[Sample]:
    path = require_file(
        path,
        what="corpus",
        fix="pass a UTF-8 text file, one entry per line (or blank-line separated with "
        "--separator blank), as --input",
    )
    counts = cleaner.counts
    for n, entry in enumerate(entries(path, config.separator), 1):
        counts.read["entries"] += 1
        prompt = config.prompt
        if config.topical:
            topic, tab, entry = entry.partition("\t")
            if not tab or not topic.strip():
                counts.drop("no_topic")
                continue
            prompt = config.prompt.replace("{topic}", tidy(topic))
        text = cleaner.text(entry)
        if not text:
            counts.drop("cleaned_away" if entry.strip() else "empty")
            continue
        turns = (("user", prompt), ("assistant", text)) if prompt else (("assistant", text),)
        yield Sample(turns, f"entry:{n}")
