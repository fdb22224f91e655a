"""Data importers and cleaning: a Telegram export, a dialogue set or a joke corpus becomes
`data/NAME/{train,val}.jsonl` in chat-messages form, plus `stats.json`.

    telegram.py         Telegram Desktop export -> dialogues, or posts for a channel
    telegram_export.py  reading the export's JSON as a stream of (chat, message)
    signatures.py       a line or link repeated in most of a sender's messages: found, cut
    dialogues.py        question/answer tables (parquet, jsonl, csv) and "- " dialogue text
    turns.py            the "- " dialogue text: multi-turn, two speakers alternating
    language.py         Russian or English, by the letters: the default prompt of posts and corpora
    corpus.py           plain texts (jokes), one per line, blank-line or separator-line separated
    clean.py            the cleaning steps (each switchable and counted), length bounds, duplicates
    split.py            the seeded train/val split by session, written atomically, and the stats
    sample.py           what importers yield (Sample) and count (Counts); opening input files

Example: `balabol data telegram --input ChatExport/result.json --name me --persona "Anna"`
"""
