"""Data importers and cleaning: a Telegram export, a dialogue set or a joke corpus becomes
`data/NAME/{train,val}.jsonl` in chat-messages form, plus `stats.json`.

    telegram.py   Telegram Desktop export (one chat's result.json or a full-account export)
    dialogues.py  question/answer tables: parquet, jsonl, csv
    corpus.py     plain texts (jokes), one per line or blank-line separated
    clean.py      the cleaning steps (each switchable and counted), length bounds, duplicates
    split.py      the seeded train/val split by session, written atomically, and the stats
    sample.py     what importers yield (Sample) and what everything counts (Counts)

Example: `balabol data telegram --input ChatExport/result.json --name me --persona "Anna"`
"""
