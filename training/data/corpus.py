"""A plain corpus (jokes, say) -> samples that teach the model to produce such a text.

`--separator` says where an entry ends:

    line      each line is an entry (the default)
    blank     blank lines separate entries, and the file's usual gap says how many: the
              median run of blank lines between two texts. Where entries end at two blank
              lines (or three), a single blank line stays inside its entry; where they end
              at one, every blank line ends an entry, so an entry with a blank line inside
              is split. A pre-pass over the file measures the gaps; the summary says which.
    ---       any other text: a line of its own that reads so ("---", "%", "* * *", spaces
              around it ignored) ends an entry, and blank lines stay inside entries
    /REGEX/   a line that REGEX matches as a whole ends an entry ("/={3,}/")

Each entry becomes

    [user: --prompt, assistant: the entry]       (default prompt: see below)
    [user: "Tell me a joke about cats", ...]     with --prompt "Tell me a joke about {topic}"
                                                  and entries written as "cats<TAB>the joke"
    [assistant: the entry]                       with --prompt "" (unconditional generation:
                                                  at run time, generate with no user turn)

Without --prompt, the prompt is in the corpus's language (language.py, as for a Telegram
channel): "Расскажи анекдот." when most of the file's letters are Cyrillic, else "Tell me a
joke."; a pre-pass over the file counts them (the same pass that measures the gaps of
--separator blank), and the summary names the prompt chosen.

Each entry is its own session. The file is UTF-8 text, read as a stream, decompressed as
it is read when its name ends in .gz or .xz; a file of another importer's format (.json,
.jsonl, .csv, .tsv, .parquet) is refused with the command that reads it.

Example: `balabol data corpus --input anekdoty.txt.xz --name jokes --separator blank`
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from balabol.errors import ConfigError, DataError
from training.data import language
from training.data.clean import Cleaner, tidy
from training.data.sample import Counts, Sample, open_text, plain_suffix, require_file

# The prompt before each entry when --prompt is not given, by the corpus's language.
PROMPTS = {"ru": "Расскажи анекдот.", "en": "Tell me a joke."}
# Files that another importer reads, by suffix, and the command that does.
OTHER_FORMATS = {
    ".json": "balabol data telegram (a Telegram Desktop export)",
    ".jsonl": "balabol data dialogues (question/answer rows)",
    ".csv": "balabol data dialogues (question/answer rows)",
    ".tsv": "balabol data dialogues (question/answer rows)",
    ".parquet": "balabol data dialogues (question/answer rows)",
}


@dataclass(frozen=True)
class CorpusConfig:
    # The docstrings are the help of `balabol data corpus`'s flags.
    separator: str = "line"
    """where an entry ends: line (each line is one), blank (blank lines, as many as the file's usual gap), a separator line of its own such as "---", or /REGEX/ matching a whole line"""
    prompt: str | None = None
    """the user turn before each entry (default: "Расскажи анекдот." for a Russian corpus, else "Tell me a joke."; {topic} takes an entry's "topic<TAB>" prefix; "" for none)"""

    def __post_init__(self):
        if not self.separator.strip():
            raise ConfigError(
                f"--separator {self.separator!r}: give line, blank, a separator line such as "
                "'---', or /REGEX/"
            )
        self.separator_line()  # a bad regex is an error now, not after reading

    @property
    def topical(self) -> bool:
        return self.prompt is not None and "{topic}" in self.prompt

    def separator_line(self) -> re.Pattern[str] | None:
        """What a separator line (stripped) must match as a whole; None for line / blank."""
        s = self.separator
        if s in ("line", "blank"):
            return None
        if len(s) > 2 and s.startswith("/") and s.endswith("/"):
            try:
                return re.compile(s[1:-1])
            except re.error as e:
                raise ConfigError(
                    f"--separator {s!r}: not a regular expression ({e}); write a separator "
                    "line as it is (--separator '---') or a valid /REGEX/"
                ) from e
        return re.compile(re.escape(s.strip()))


@dataclass
class Survey:
    """What the pre-pass counted: the runs of blank lines between two texts, by length (for
    --separator blank), and the file's letters (for the default prompt)."""

    gaps: Counter = field(default_factory=Counter)
    letters: Counter = field(default_factory=Counter)


def survey(path: Path, *, gaps: bool, letters: bool) -> Survey | None:
    """One pass over the file counting what is asked for; None when nothing is."""
    if not (gaps or letters):
        return None
    found = Survey()
    blank, seen = 0, False
    with open_text(path, desc=f"{path.name} (survey)") as f:
        for line in f:
            if not line.strip():
                blank += 1
                continue
            if letters:
                found.letters.update(language.letters(line))
            if blank and seen:
                found.gaps[blank] += 1
            blank, seen = 0, True
    return found


def usual_gap(runs: Counter) -> int:
    """The longest gap that most gaps reach (the median gap, rounded up): 1 when no gap is
    longer or longer ones are rare; 2 in a file whose entries end at two blank lines even
    when many entries hold a single one."""
    total, gap = sum(runs.values()), 1
    for length in sorted(runs):
        if 2 * sum(n for k, n in runs.items() if k >= length) > total:
            gap = length
    return gap


def _blank_note(runs: Counter, gap: int) -> str:
    if gap == 1:
        return (
            "--separator blank: every blank line ends an entry (the usual gap in this file is "
            "one blank line), so an entry with a blank line inside is split in two; to keep "
            "such entries whole, separate entries by a line of their own (--separator '---') "
            "or by two blank lines"
        )
    inside = sum(n for k, n in runs.items() if k < gap)
    return (
        f"--separator blank: entries end at {gap} or more blank lines in a row, the usual gap "
        f"in this file; {inside:,} shorter gap{'s' * (inside != 1)} stayed inside entries"
    )


def entries(
    path: Path, config: CorpusConfig, counts: Counts | None = None, surveyed: Survey | None = None
) -> Iterator[str]:
    """The corpus's raw entries, streamed; what --separator blank decided goes to counts.notes
    (its pre-pass is `surveyed`'s gaps when given)."""
    counts = counts if counts is not None else Counts()
    separator = config.separator_line()
    if config.separator == "line":
        with open_text(path, desc=path.name) as f:
            for line in f:
                if line.strip():
                    yield line.rstrip("\r\n")
        return
    gap = 0
    if config.separator == "blank":
        runs = (surveyed or survey(path, gaps=True, letters=False)).gaps
        gap = usual_gap(runs)
        counts.notes.append(_blank_note(runs, gap))
    block: list[str] = []
    blank = 0  # blank lines in a row (--separator blank)
    separators = 0
    with open_text(path, desc=path.name) as f:
        for raw in f:
            line = raw.rstrip("\r\n")
            if separator is not None:
                if separator.fullmatch(line.strip()):
                    separators += 1
                    if block:
                        yield "\n".join(block)
                    block = []
                else:
                    block.append(line)
            elif not line.strip():
                blank += 1
            else:
                if blank >= gap and block:
                    yield "\n".join(block)
                    block = []
                elif blank and block:
                    block.append("")  # a shorter gap: a blank line inside the entry
                block.append(line)
                blank = 0
    if block:
        yield "\n".join(block)
    if separator is not None and not separators:
        counts.notes.append(
            f"no line is the separator {config.separator!r}: the whole file was read as one "
            "entry; check --separator"
        )


def read(path: Path, config: CorpusConfig, cleaner: Cleaner) -> Iterator[Sample]:
    path = require_file(
        path,
        what="corpus",
        fix="pass a UTF-8 text file, one entry per line (or separated with --separator "
        "blank, '---' or /REGEX/), as --input",
    )
    other = OTHER_FORMATS.get(plain_suffix(path))
    if other is not None:
        raise DataError(
            f"{path}: a {plain_suffix(path)} file is not a plain-text corpus; read it with "
            f"{other}, or pass a .txt file with one entry per line"
        )
    counts = cleaner.counts
    surveyed = survey(path, gaps=config.separator == "blank", letters=config.prompt is None)
    default = config.prompt is None
    lang = language.language(surveyed.letters) if default else None
    prompt = PROMPTS[lang] if default else config.prompt
    for n, entry in enumerate(entries(path, config, counts, surveyed), 1):
        counts.read["entries"] += 1
        asked = prompt
        if config.topical:
            topic, tab, entry = entry.partition("\t")
            if not tab or not topic.strip():
                counts.drop("no_topic")
                continue
            asked = prompt.replace("{topic}", tidy(topic))
        text, why = cleaner.clean(entry)
        if why:
            counts.drop(why)
            continue
        turns = (("user", asked), ("assistant", text)) if asked else (("assistant", text),)
        yield Sample(turns, f"entry:{n}")
    if default:
        counts.notes.append(
            f"each entry became [user: {prompt!r}, assistant: the entry]: the corpus is in "
            f'{language.NAMES[lang]}; --prompt sets another prompt ("" for none)'
        )
