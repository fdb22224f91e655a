"""Scoring through the runtime's backends: the parity gate, `balabol eval` and the benchmarks
read a model's numbers from the same backend (and the same file) that serves its replies.

- `nll`, `log_softmax`, `perplexity`: the log-loss of a backend's (T, V) logits
  (`DecoderBackend.logits`), a few rows at a time.
- `score`: `balabol eval`'s numbers for one backend on chat samples: loss, perplexity and
  bits per byte on the assistant replies, teacher-forced, exactly the tokens `balabol train`
  puts the loss on (`balabol.labels`); ROUGE-L and BLEU of the greedy reply to each sample's
  last assistant turn (`DecoderBackend.greedy_batch`, the decode loop the bot runs); and the
  speed of those replies.
- `score_replies`: the reply numbers alone, for a backend that holds no model here (the
  remote backend: an OpenAI-compatible server returns no logits to score).

Example: `balabol eval --data data/me --artifact me --format gguf-q4_k_m`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from balabol import metrics
from balabol.errors import DataError
from balabol.labels import IGNORE_INDEX, Encoded, encode
from balabol.prompt import CHAT_TEMPLATE, encode_chat, leading_special_ids
from balabol.samples import Sample

MAX_NEW_TOKENS = 64
BATCH_SIZE = 8
TOKENS_PER_FORWARD = 8192  # caps a padded batch's (batch, time, vocab) logits (torch)
EXAMPLES = 5  # replies kept in the result for a human to read


# --- log-loss of logits --------------------------------------------------------------------


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def nll(logits: np.ndarray, targets: Sequence[int], rows: int = 64) -> np.ndarray:
    """-log p(target) for each row of (T, V) logits, a few rows at a time: a float64 copy
    of all of them would be 1 GB for 512 tokens of Gemma's 262k vocabulary."""
    targets = np.asarray(targets)
    out = np.empty(len(targets))
    for s in range(0, len(targets), rows):
        x = logits[s : s + rows].astype(np.float64)  # (rows, V)
        m = x.max(-1)
        lse = m + np.log(np.exp(x - m[:, None]).sum(-1))
        out[s : s + rows] = lse - x[np.arange(len(x)), targets[s : s + rows]]
    return out


def perplexity(backend, ids: Sequence[int]) -> float:
    """exp(mean NLL) of a text's ids under a backend; position t predicts ids[t+1]."""
    return float(np.exp(nll(backend.logits(ids)[:-1], ids[1:]).mean()))


# --- `balabol eval` ------------------------------------------------------------------------


def encode_samples(samples: Sequence[Sample], tokenizer, context: int) -> list[Encoded]:
    """The samples with something to score, as `balabol train` tokenizes them, shortest first."""
    lead = leading_special_ids(tokenizer)
    encoded = [encode(s.messages, tokenizer, max_length=context, lead=lead) for s in samples]
    encoded = sorted((e for e in encoded if e.n_targets), key=lambda e: len(e.input_ids))
    if not encoded:
        raise DataError(
            f"no assistant reply of the {len(samples)} samples fits in the model's context "
            f"({context} tokens); shorten the conversations (`balabol data ...`)"
        )
    return encoded


def last_turns(samples: Sequence[Sample]) -> tuple[list[list[dict]], list[str], list[str]]:
    """(the messages before each sample's last assistant reply, that reply, the user's question)."""
    prompts, references, asked = [], [], []
    for s in samples:
        last = max(i for i, m in enumerate(s.messages) if m["role"] == "assistant")
        prompts.append(list(s.messages[:last]))
        references.append(s.messages[last]["content"])
        asked.append(next((m["content"] for m in s.messages[last::-1] if m["role"] == "user"), ""))
    return prompts, references, asked


def prompt_ids(tokenizer, prompts: Sequence[Sequence[dict]], *, context: int, max_new_tokens: int):
    """Prompts tokenized by `balabol.prompt.encode_chat`, as the runtime does; too long ones keep
    their leading special tokens and their latest tokens, leaving room for the reply."""
    lead = leading_special_ids(tokenizer)
    room = max(context - max_new_tokens - len(lead), 1)
    rows = []
    for p in prompts:
        ids = encode_chat(tokenizer, p, template=CHAT_TEMPLATE)
        rows.append(ids if len(ids) <= room + len(lead) else [*lead, *ids[-room:]])
    return rows


def chunks(items: Sequence, size: int, tokens: int, length: Callable) -> list[list]:
    """Batches of at most `size` items and about `tokens` padded tokens (items pre-sorted)."""
    out, cur = [], []
    for it in items:
        if cur and (
            len(cur) == size or (len(cur) + 1) * max(length(it), *map(length, cur)) > tokens
        ):
            out.append(cur)
            cur = []
        cur.append(it)
    return [*out, cur] if cur else out


def reply_text(tokenizer, ids: Sequence[int]) -> str:
    # a character cut off by max_new_tokens decodes to U+FFFD; drop it, as streaming does
    # (runtime/base.py TextStream)
    return tokenizer.decode(list(ids), skip_special_tokens=True).rstrip("\ufffd").strip()


def score(
    backend,
    samples: Sequence[Sample],
    *,
    context: int,
    reply_context: int | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = BATCH_SIZE,
) -> dict[str, Any]:
    """`balabol eval`'s numbers for one backend: samples longer than `context` (the model's)
    keep their first tokens; reply prompts keep their last `reply_context` tokens (default:
    the backend's, as the bot trims a chat). `batch_size` sequences go through one forward
    pass where the backend can batch them (torch); the others run one at a time."""
    from tqdm.auto import tqdm

    tokenizer = backend.tokenizer

    # 1. teacher-forced log-loss on the assistant replies: only the labelled positions'
    # logits are kept (position t predicts token t+1)
    encoded = encode_samples(samples, tokenizer, context)
    total = 0.0
    batches = chunks(encoded, batch_size, TOKENS_PER_FORWARD, lambda e: len(e.input_ids))
    for batch in tqdm(batches, desc="perplexity", unit="batch"):
        targets = [np.asarray(e.labels[1:]) for e in batch]
        positions = [np.flatnonzero(t != IGNORE_INDEX) for t in targets]
        rows = backend.logits_batch([e.input_ids for e in batch], positions)
        for logits, t, p in zip(rows, targets, positions, strict=True):
            total += float(nll(logits, t[p]).sum())

    # 2. greedy replies to the conversation before each sample's last assistant turn
    prompts, references, asked = last_turns(samples)
    rows = prompt_ids(
        tokenizer,
        prompts,
        context=reply_context or backend.context_length,
        max_new_tokens=max_new_tokens,
    )
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    replies: dict[int, str] = {}
    t = time.perf_counter()
    for start in tqdm(range(0, len(order), batch_size), desc="replies", unit="batch"):
        idx = order[start : start + batch_size]
        got = backend.greedy_batch([rows[i] for i in idx], max_new_tokens)
        replies.update((i, reply_text(tokenizer, ids)) for i, ids in zip(idx, got, strict=True))
    seconds = time.perf_counter() - t
    return numbers(
        samples,
        encoded,
        total,
        asked,
        references,
        [replies[i] for i in range(len(rows))],
        tokenizer=tokenizer,
        reply_seconds=seconds,
    )


def score_replies(
    backend, samples: Sequence[Sample], *, max_new_tokens: int = MAX_NEW_TOKENS
) -> dict[str, Any]:
    """ROUGE-L, BLEU and speed of greedy replies asked of a backend by messages (its server
    applies the chat template); loss, perplexity and bits per byte are None: no logits."""
    from tqdm.auto import tqdm

    from runtime.base import GenerationConfig

    prompts, references, asked = last_turns(samples)
    config = GenerationConfig.greedy(max_new_tokens)
    replies, reply_tokens, seconds = [], 0, 0.0
    for messages in tqdm(prompts, desc="replies", unit="reply"):
        t = time.perf_counter()
        replies.append(backend.generate(messages, config).rstrip("\ufffd").strip())
        seconds += time.perf_counter() - t
        reply_tokens += backend.last_stats.new_tokens  # as the server counted them
    return numbers(
        samples,
        None,
        0.0,
        asked,
        references,
        replies,
        tokenizer=None,
        reply_seconds=seconds,
        reply_tokens=reply_tokens,
    )


def numbers(
    samples: Sequence[Sample],
    encoded: Sequence[Encoded] | None,
    total_nll: float,
    asked: Sequence[str],
    references: Sequence[str],
    replies: Sequence[str],
    *,
    tokenizer,
    reply_seconds: float,
    reply_tokens: int | None = None,
) -> dict[str, Any]:
    """The result's numbers; with no `encoded` (nothing teacher-forced) the log-loss ones
    are None."""
    if reply_tokens is None:  # the replies' text re-tokenized: the same for every format
        reply_tokens = sum(
            len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in replies
        )
    n_tokens = sum(e.n_targets for e in encoded) if encoded else None
    n_bytes = sum(e.target_bytes for e in encoded) if encoded else None
    loss = total_nll / n_tokens if encoded else None
    cand = [metrics.words(r) for r in replies]
    refs = [metrics.words(r) for r in references]
    return {
        "samples": len(samples),
        "target_tokens": n_tokens,
        "target_bytes": n_bytes,
        "loss": None if loss is None else round(loss, 6),
        "perplexity": None if loss is None else round(math.exp(min(loss, 50.0)), 4),
        "bits_per_byte": (
            None if loss is None else round(metrics.bits_per_byte(total_nll, n_bytes), 6)
        ),
        "rouge_l": round(sum(map(metrics.rouge_l, cand, refs)) / len(cand), 6),
        "bleu": round(metrics.corpus_bleu(cand, refs), 6),
        # speed as eval generates: batched for torch, one reply at a time (as served) otherwise
        "reply_tokens": reply_tokens,
        "reply_tokens_per_second": round(reply_tokens / max(reply_seconds, 1e-9), 2),
        "examples": [
            {"user": u, "reference": r, "reply": g}
            for u, r, g in list(zip(asked, references, replies, strict=True))[:EXAMPLES]
        ],
    }
