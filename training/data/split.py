"""Samples -> `data/NAME/{train,val}.jsonl` and `stats.json`: a seeded split by session,
written atomically. Each line is one conversation in chat-messages form:

    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
     "session": "5965280513:0"}

How:
1. each sample within the length bounds is appended to a temporary file; its duplicate
   hashes, session hash and token count go to compact arrays (~30 bytes a sample);
2. duplicates are dropped (`clean.duplicates`);
3. each session's seeded hash picks one of 65,536 buckets; val takes buckets from the lowest
   up until it holds the closest to `--val-fraction` of the samples (never none and never all
   when there are two sessions or more), so one session is never in both files;
4. train.jsonl, val.jsonl and stats.json are written to temporary files and renamed into
   place: a failure leaves the previous output (or nothing), never half a file.

Tokens are whitespace-separated words unless `--tokenizer DIR` names a model directory
with a tokenizer.json: then they are the tokens of each conversation as training renders it.

Example: `balabol data corpus --input jokes.txt --name jokes --val-fraction 0.1 --seed 1`
"""

from __future__ import annotations

import dataclasses
import json
import os
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from balabol.errors import ConfigError, DataError, require
from balabol.files import open_temp
from training.data.clean import Cleaner, duplicates, hash64
from training.data.sample import REASONS, Counts, Sample

TRAIN_FILE, VAL_FILE, STATS_FILE = "train.jsonl", "val.jsonl", "stats.json"
BUCKETS = 1 << 16


@dataclass(frozen=True)
class SplitConfig:
    # The docstrings are the help of `balabol data`'s flags.
    out_dir: Path
    """data/NAME"""
    val_fraction: float = 0.2
    """share of samples (by session) for val.jsonl"""
    seed: int = 0
    """seed of the train/val split"""
    tokenizer: str | None = None
    """count tokens with this HF tokenizer directory (default: words)"""

    def __post_init__(self):
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"--val-fraction {self.val_fraction!r}: must be between 0 and 1")
        if not isinstance(self.seed, int):
            raise ConfigError(f"--seed {self.seed!r}: must be a whole number")


def _u64(a: array):
    import numpy as np

    return np.frombuffer(a, dtype=np.uint64) if len(a) else np.zeros(0, dtype=np.uint64)


def token_counter(tokenizer: str | None) -> tuple[Callable[[Sample], int], str]:
    """(sample -> tokens, the unit's name): whitespace words, or the tokens of the rendered
    chat (balabol.prompt) under a fast tokenizer's tokenizer.json, as training counts them."""
    if tokenizer is None:
        return (lambda s: sum(len(c.split()) for _, c in s.messages)), "words"
    tokenizers = require("tokenizers", extra="torch")
    from balabol.prompt import render_chat

    path = Path(tokenizer)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(
            f"--tokenizer {tokenizer}: no tokenizer.json there; pass a model directory that "
            "has one (a fast tokenizer, as training needs) or the file itself"
        )
    try:
        tok = tokenizers.Tokenizer.from_file(str(file))
    except Exception as e:  # the Rust library raises plain Exceptions for a bad file
        raise ConfigError(f"--tokenizer {tokenizer}: cannot load {file} ({e})") from e

    def count(sample: Sample) -> int:
        text = render_chat(sample.to_json()["messages"], add_generation_prompt=False)
        return len(tok.encode(text, add_special_tokens=False).ids)

    return count, f"tokens ({tokenizer})"


def val_buckets(buckets, keep, fraction: float) -> int:
    """How many of the lowest buckets go to val: closest to `fraction` of the kept samples,
    but leaving both sides non-empty when the samples span two buckets or more."""
    import numpy as np

    cum = np.cumsum(np.bincount(buckets[keep], minlength=BUCKETS))  # samples in buckets <= i
    n = int(cum[-1])
    both = (cum > 0) & (cum < n)
    if not both.any():
        return 0  # one session (or one bucket): all to train
    cost = np.where(both, np.abs(cum - fraction * n), np.inf)
    return int(np.argmin(cost)) + 1


def describe(*configs) -> dict:
    """Frozen configs as JSON (sets sorted, paths as strings), for stats.json."""

    def plain(v):
        if isinstance(v, (set, frozenset)):
            return sorted(v)
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple):
            return list(v)
        return v

    out = {}
    for c in configs:
        out.update({k: plain(v) for k, v in dataclasses.asdict(c).items()})
    return out


def _nothing_left(out_dir: Path, counts: Counts) -> DataError:
    read = ", ".join(f"{n} {unit}" for unit, n in counts.read.items()) or "nothing"
    dropped = "; ".join(f"{n} {r} ({REASONS[r]})" for r, n in counts.dropped.most_common())
    changed = ", ".join(f"{step} {n}" for step, n in counts.changed.most_common())
    return DataError(
        f"nothing is left to write to {out_dir}: read {read}"
        + (f"; dropped: {dropped}" if dropped else "")
        + (f"; replacements by cleaning step: {changed}" if changed else "")
        + ". Turn off the step that removes too much (--no-NAME), loosen the filter that "
        "dropped the most, or check the input and its options"
    )


def write(
    samples: Iterable[Sample], config: SplitConfig, cleaner: Cleaner, *, meta: dict | None = None
) -> dict:
    """Write train/val/stats under config.out_dir (atomically) and return the stats."""
    import numpy as np

    out_dir, counts = Path(config.out_dir), cleaner.counts
    count_tokens, unit = token_counter(config.tokenizer)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    exact, normal, sessions = array("Q"), array("Q"), array("Q")
    tokens = array("Q")
    temps: list[Path] = []

    def temp(name: str):
        f, path = open_temp(out_dir, name)  # renamed into place together at the end
        temps.append(path)
        return f

    try:
        # 1. every sample in bounds to a temporary file, its hashes to arrays
        with temp("all") as f:
            for sample in samples:
                if not cleaner.bounded(sample):
                    continue
                f.write(json.dumps(sample.to_json(), ensure_ascii=False) + "\n")
                e, n = cleaner.keys(sample)
                exact.append(e)
                normal.append(n)
                sessions.append(hash64(f"{config.seed}\x00{sample.session}"))
                tokens.append(count_tokens(sample))
        all_path = temps[0]

        # 2. duplicates; 3. the split by session bucket
        keep = duplicates(_u64(exact), _u64(normal), cleaner.config.dedup, counts)
        session_ids = _u64(sessions)
        if not keep.any():
            raise _nothing_left(out_dir, counts)
        buckets = (session_ids >> np.uint64(48)).astype(np.int64)
        is_val = buckets < val_buckets(buckets, keep, config.val_fraction)

        # 4. the two files, then the stats, renamed into place
        with temp("train") as train, temp("val") as val, open(all_path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if keep[i]:
                    (val if is_val[i] else train).write(line)
        n_tokens = _u64(tokens)
        stats = {**(meta or {}), "out_dir": str(out_dir), "kept": int(keep.sum())}
        for name, side in (("train", keep & ~is_val), ("val", keep & is_val)):
            stats[name] = {
                "samples": int(side.sum()),
                "sessions": int(np.unique(session_ids[side]).size),
                "tokens": int(n_tokens[side].sum()),
            }
        stats.update(
            sessions=stats["train"]["sessions"] + stats["val"]["sessions"],
            tokens=int(n_tokens[keep].sum()),
            token_unit=unit,
            read=dict(counts.read),
            dropped=dict(counts.dropped.most_common()),
            changed=dict(counts.changed.most_common()),
            notes=list(counts.notes),
            warnings=[],
        )
        if not stats["val"]["samples"]:
            stats["warnings"].append(
                f"{VAL_FILE} is empty: all samples come from one session, so training will "
                "not evaluate; give more data (or, for a chat, a shorter --gap-minutes)"
            )
        with temp("stats") as f:
            json.dump(stats, f, ensure_ascii=False, indent=2)
            f.write("\n")
        for tmp, final in zip(temps[1:], (TRAIN_FILE, VAL_FILE, STATS_FILE), strict=True):
            os.replace(tmp, out_dir / final)
        return stats
    finally:
        for p in temps:
            p.unlink(missing_ok=True)
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()


def table(stats: dict) -> str:
    """The one-screen summary `balabol data` prints."""
    rows: list[tuple[str, str, str]] = []
    for unit, n in stats["read"].items():
        rows.append((f"read {unit}", f"{n:,}", ""))

    def both(key: str) -> str:
        return f"train {stats['train'][key]:,} · val {stats['val'][key]:,}"

    rows.append(("kept samples", f"{stats['kept']:,}", both("samples")))
    rows.append(("sessions", f"{stats['sessions']:,}", both("sessions")))
    rows.append((stats["token_unit"], f"{stats['tokens']:,}", both("tokens")))
    for reason, n in stats["dropped"].items():
        rows.append((f"dropped: {reason}", f"{n:,}", REASONS.get(reason, "")))
    for step, n in stats["changed"].items():
        rows.append((f"cleaned: {step}", f"{n:,}", "replacements"))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{stats['out_dir']}: {TRAIN_FILE}, {VAL_FILE}, {STATS_FILE}"]
    lines += [f"  {a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in rows]
    lines += [f"note: {n}" for n in stats.get("notes", ())]
    lines += [f"warning: {w}" for w in stats["warnings"]]
    return "\n".join(lines)
