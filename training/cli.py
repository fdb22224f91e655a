"""`balabol data telegram|dialogues|corpus`: build a training data set in data/NAME/.

Each source is a subcommand that takes its own config (TelegramConfig, DialoguesConfig,
CorpusConfig) plus the shared cleaning (CleanConfig and one `--x/--no-x` flag per cleaning
step of clean.STEPS) and split (SplitConfig) options, flattened into flags whose help is the
docstring of each field. The subclasses below only say how a field is spelled on the command
line where that differs from its name (old spellings keep working).

The data modules imported here are light (stdlib only at import time); ijson, pyarrow, numpy
and transformers are imported when a command runs.

Example: `balabol data telegram --input ChatExport/result.json --name me --persona "Anna"`
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from cyclopts import App, Group, Parameter

from balabol.errors import ConfigError
from training.data.clean import DEFAULT_STEPS, STEPS, CleanConfig
from training.data.corpus import CorpusConfig
from training.data.dialogues import DialoguesConfig
from training.data.split import SplitConfig
from training.data.telegram import TelegramConfig

SOURCES = ("telegram", "dialogues", "corpus")

data = App(
    name="data",
    help="Build a training data set: a Telegram export, a dialogue table or a corpus -> data/NAME/.",
)


# --- the configs as flags -----------------------------------------------------------------------


def _resolved(cls: type) -> type:
    """cyclopts reads a dataclass's fields from its __init__, whose string annotations
    (`from __future__ import annotations`) Python evaluates in the module that made the class:
    here, where the base's names (Media, Dedup) do not exist. Give it resolved ones."""
    cls.__init__.__annotations__ = typing.get_type_hints(cls, include_extras=True)
    return cls


@_resolved
@dataclass(frozen=True)
class Telegram(TelegramConfig):
    chats: Annotated[tuple[str, ...], Parameter(name="--chat", alias="--chats")] = ()


@_resolved
@dataclass(frozen=True)
class Dialogues(DialoguesConfig):
    question: Annotated[str, Parameter(name="--question-column")] = "question"
    answer: Annotated[str, Parameter(name="--answer-column")] = "answer"
    session: Annotated[str | None, Parameter(name="--session-column")] = None


@_resolved
@dataclass(frozen=True)
class Corpus(CorpusConfig):
    # `--separator ---` is a value, not an option
    separator: Annotated[str, Parameter(allow_leading_hyphen=True)] = "line"


@_resolved
@dataclass(frozen=True)
class Cleaning(CleanConfig):
    # the steps come from the per-step flags (Steps below), not from one --steps list
    steps: Annotated[frozenset[str], Parameter(parse=False)] = DEFAULT_STEPS


@_resolved
@dataclass(frozen=True)
class Split(SplitConfig):
    out_dir: Annotated[Path, Parameter(parse=False)] = Path()  # --out-dir / --name


def _steps_flags() -> type:
    """A frozen dataclass of one bool per cleaning step, from the STEPS registry: a new step
    gets its `--x/--no-x` flag, help and default without touching the CLI."""
    fields = [
        (name, Annotated[bool, Parameter(help=step.help)], step.default)
        for name, step in STEPS.items()
    ]
    cls = dataclasses.make_dataclass("Steps", fields, frozen=True)
    cls.__module__ = __name__  # cyclopts takes classes of stdlib modules ("types") as values
    return cls


Steps = _steps_flags()
DEFAULT_STEP_FLAGS = Steps()  # the registry's defaults


def _flags(heading: str, order: int) -> Parameter:
    """A dataclass parameter whose fields are top-level flags, under a heading of --help."""
    return Parameter(name="*", group=Group(heading, sort_key=order))


Name = Annotated[
    str | None,
    Parameter(help="the data set's name (required): writes OUT_DIR/NAME/{train,val}.jsonl"),
]
OutDir = Annotated[
    Path | None, Parameter(help="where data sets go (default: $BALABOL_DATA or ./data)")
]


# --- the subcommands ----------------------------------------------------------------------------


@data.command
def telegram(
    *,
    input: Annotated[
        Path | None, Parameter(help="the Telegram export's result.json (required)")
    ] = None,
    name: Name = None,
    out_dir: OutDir = None,
    config: Annotated[Telegram, _flags("Telegram", 1)] = Telegram(),
    steps: Annotated[Steps, _flags("Cleaning", 2)] = DEFAULT_STEP_FLAGS,
    cleaning: Annotated[Cleaning, _flags("Cleaning", 2)] = Cleaning(),
    split: Annotated[Split, _flags("Split", 3)] = Split(),
) -> int:
    """A Telegram Desktop export (one chat or a whole account) -> data/NAME/: the persona's
    messages become the assistant's replies; a channel's posts (or those of an export where
    only the persona wrote) become samples after a prompt in the posts' language."""
    from training.data import telegram as reader

    return _build("telegram", reader.read, config, input, name, out_dir, steps, cleaning, split)


@data.command
def dialogues(
    *,
    input: Annotated[
        Path | None,
        Parameter(
            help='a question/answer table (parquet, jsonl, csv, tsv) or "- " dialogues (txt); '
            "text ones also as .gz or .xz (required)"
        ),
    ] = None,
    name: Name = None,
    out_dir: OutDir = None,
    config: Annotated[Dialogues, _flags("Dialogues", 1)] = Dialogues(),
    steps: Annotated[Steps, _flags("Cleaning", 2)] = DEFAULT_STEP_FLAGS,
    cleaning: Annotated[Cleaning, _flags("Cleaning", 2)] = Cleaning(),
    split: Annotated[Split, _flags("Split", 3)] = Split(),
) -> int:
    """A dialogue set -> data/NAME/: a question/answer table gives one-turn samples (user:
    question, assistant: answer); "- " dialogues give multi-turn samples, speakers alternating
    and ending on a reply (a dialogue of an odd number of turns loses its first)."""
    from training.data import dialogues as reader

    return _build("dialogues", reader.read, config, input, name, out_dir, steps, cleaning, split)


@data.command
def corpus(
    *,
    input: Annotated[
        Path | None, Parameter(help="the text file, also as .gz or .xz (required)")
    ] = None,
    name: Name = None,
    out_dir: OutDir = None,
    config: Annotated[Corpus, _flags("Corpus", 1)] = Corpus(),
    steps: Annotated[Steps, _flags("Cleaning", 2)] = DEFAULT_STEP_FLAGS,
    cleaning: Annotated[Cleaning, _flags("Cleaning", 2)] = Cleaning(),
    split: Annotated[Split, _flags("Split", 3)] = Split(),
) -> int:
    """A plain text corpus (jokes, say) -> data/NAME/: samples that teach the model such texts."""
    from training.data import corpus as reader

    return _build("corpus", reader.read, config, input, name, out_dir, steps, cleaning, split)


@data.default
def _unknown(
    source: Annotated[str | None, Parameter(show=False)] = None,
    /,
    *rest: Annotated[str, Parameter(show=False, allow_leading_hyphen=True)],
) -> int:
    """`balabol data twitter ...`: say which sources there are (cyclopts would only say
    that a token was not used)."""
    if source is None:
        raise ConfigError(
            f"balabol data needs a source: {', '.join(SOURCES)}; e.g. "
            "`balabol data telegram --input result.json --name me` (--help lists the options)"
        )
    raise ConfigError(f"unknown data source {source!r}; the sources are: {', '.join(SOURCES)}")


def _build(
    source: str,
    read: Callable[..., Iterable],
    source_config: object,
    input: Path | None,
    name: str | None,
    out_dir: Path | None,
    steps: object,
    cleaning: Cleaning,
    split_options: Split,
) -> int:
    from balabol.settings import data_dir
    from training.data import split
    from training.data.clean import Cleaner

    if input is None:
        raise ConfigError(f"--input is required: the {source} file to read")
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(
            f"--name {name!r}: give the data set a plain name (no slashes), e.g. --name me; "
            "it is written to OUT_DIR/NAME/"
        )
    on = frozenset(step for step, enabled in dataclasses.asdict(steps).items() if enabled)
    clean_config = dataclasses.replace(cleaning, steps=on)
    split_config = dataclasses.replace(split_options, out_dir=(out_dir or data_dir()) / name)
    cleaner = Cleaner(clean_config)
    stats = split.write(
        read(input, source_config, cleaner),
        split_config,
        cleaner,
        meta={
            "source": source,
            "input": str(input),
            "config": split.describe(source_config, clean_config, split_config),
        },
    )
    print(split.table(stats))
    return 0
