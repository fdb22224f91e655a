"""The training stage's commands. The data modules imported here are light (stdlib only at
import time); ijson, pyarrow, numpy and transformers are imported when a command runs.

Example: `balabol data telegram --input ChatExport/result.json --name me --persona "Anna"`
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from training.data.clean import CleanConfig, Dedup
from training.data.corpus import CorpusConfig, Separator
from training.data.split import SplitConfig
from training.data.telegram import Media, TelegramConfig

SOURCES = ("telegram", "dialogues", "corpus")


def data(
    source: Annotated[str, "what --input is: telegram, dialogues or corpus"],
    *,
    input: Annotated[Path | None, "the Telegram export, dialogue table or text file"] = None,
    name: Annotated[
        str | None, "the data set's name: writes OUT_DIR/NAME/{train,val}.jsonl"
    ] = None,
    out_dir: Annotated[Path | None, "where data sets go (default: $BALABOL_DATA or ./data)"] = None,
    # telegram
    persona: Annotated[
        str | None,
        "telegram: whose messages the bot learns, a sender's name or from_id (default: the owner of a full-account export)",
    ] = None,
    gap_minutes: Annotated[float, "telegram: a longer pause starts a new session"] = (
        TelegramConfig.gap_minutes
    ),
    max_turns: Annotated[int, "telegram: turns per sample (the context window)"] = (
        TelegramConfig.max_turns
    ),
    media: Annotated[Media, "telegram: media without text is dropped or becomes <photo>, …"] = (
        TelegramConfig.media
    ),
    no_sticker_emoji: Annotated[
        bool, "telegram: treat stickers as media, not as their emoji"
    ] = False,
    chat: Annotated[
        list[str] | None, "telegram: only these chats (names or ids) of a full export"
    ] = None,
    # dialogues
    question_column: Annotated[str, "dialogues: the question column"] = "question",
    answer_column: Annotated[str, "dialogues: the answer column"] = "answer",
    session_column: Annotated[str | None, "dialogues: a column grouping rows into sessions"] = None,
    # corpus
    separator: Annotated[Separator, "corpus: one entry per line, or blank-line separated"] = (
        CorpusConfig.separator
    ),
    prompt: Annotated[
        str,
        'corpus: the user turn before each entry ({topic} takes a "topic<TAB>" prefix; "" for none)',
    ] = CorpusConfig.prompt,
    # cleaning (see training/data/clean.py)
    no_markup: Annotated[bool, "keep HTML/BBCode/markdown remnants"] = False,
    no_emails: Annotated[bool, "keep e-mail addresses"] = False,
    no_links: Annotated[bool, "keep links"] = False,
    no_mentions: Annotated[bool, "keep @mentions and forwarded-from names"] = False,
    no_hashtags: Annotated[bool, "keep #hashtags"] = False,
    no_dates: Annotated[bool, "keep dates and times"] = False,
    no_cards: Annotated[bool, "keep card-like numbers"] = False,
    no_phones: Annotated[bool, "keep phone numbers"] = False,
    emoji: Annotated[bool, "remove emoji (kept by default)"] = False,
    no_placeholders: Annotated[
        bool, "remove PII outright instead of writing <url>, <phone>, …"
    ] = False,
    dedup: Annotated[
        Dedup, "drop repeated samples: normalized (also case/punctuation), exact, off"
    ] = (CleanConfig.dedup),
    min_chars: Annotated[int, "drop samples whose replies are shorter (0: no bound)"] = (
        CleanConfig.min_chars
    ),
    max_chars: Annotated[int, "drop samples whose replies are longer (0: no bound)"] = (
        CleanConfig.max_chars
    ),
    # split
    val_fraction: Annotated[float, "share of samples (by session) for val.jsonl"] = (
        SplitConfig.val_fraction
    ),
    seed: Annotated[int, "seed of the train/val split"] = SplitConfig.seed,
    tokenizer: Annotated[
        str | None, "count tokens with this HF tokenizer directory (default: words)"
    ] = None,
) -> int:
    """Build a training data set: a Telegram export, a dialogue table or a corpus -> data/NAME/."""
    from balabol.errors import ConfigError
    from balabol.settings import data_dir
    from training.data import corpus, dialogues, split, telegram
    from training.data.clean import Cleaner

    if source not in SOURCES:
        raise ConfigError(f"unknown data source {source!r}; the sources are: {', '.join(SOURCES)}")
    if input is None:
        raise ConfigError(f"--input is required: the {source} file to read")
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(
            f"--name {name!r}: give the data set a plain name (no slashes), e.g. --name me; "
            "it is written to OUT_DIR/NAME/"
        )

    steps = {
        "markup": no_markup,
        "emails": no_emails,
        "links": no_links,
        "mentions": no_mentions,
        "hashtags": no_hashtags,
        "dates": no_dates,
        "cards": no_cards,
        "phones": no_phones,
    }
    clean_config = CleanConfig.from_flags(
        off=[step for step, off in steps.items() if off],
        on=["emoji"] if emoji else [],
        placeholders=not no_placeholders,
        dedup=dedup,
        min_chars=min_chars,
        max_chars=max_chars,
    )
    split_config = SplitConfig(
        out_dir=(out_dir or data_dir()) / name,
        val_fraction=val_fraction,
        seed=seed,
        tokenizer=tokenizer,
    )
    # each source: its reader and its config, built only for the source asked for
    readers = {
        "telegram": lambda: (
            telegram.read,
            TelegramConfig(
                persona=persona,
                gap_minutes=gap_minutes,
                max_turns=max_turns,
                media=media,
                sticker_emoji=not no_sticker_emoji,
                chats=tuple(chat or ()),
            ),
        ),
        "dialogues": lambda: (
            dialogues.read,
            dialogues.DialoguesConfig(
                question=question_column, answer=answer_column, session=session_column
            ),
        ),
        "corpus": lambda: (corpus.read, CorpusConfig(separator=separator, prompt=prompt)),
    }
    read, source_config = readers[source]()
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
