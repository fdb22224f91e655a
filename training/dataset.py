"""Chat samples -> token ids and labels, with the loss on assistant turns only (switchable).

A sample is one line of `data/NAME/{train,val}.jsonl`:
`{"messages": [{"role": "user", "content": "..."}, ...], "session": "<id>"}`. It is rendered
with `balabol.prompt.render_chat`, the function export and the runtime use, and tokenized
as the runtime tokenizes it (`balabol.prompt.tokenize_segments`: message text is plain text,
control tokens come only from the template), so the model is trained on the ids it is served.
Labels are -100 except on each assistant reply and the `<|im_end|>` that closes it (so the
model learns to stop).

Example: `balabol train --data data/me --name me` reads data/me/train.jsonl through this.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from balabol.errors import BaseModelError, ConfigError, DataError
from balabol.prompt import (
    BOS_TOKEN,
    CHAT_TEMPLATE,
    EOS_TOKEN,
    leading_special_ids,
    render_chat,
    render_segments,
    tokenize_segments,
    validate_messages,
)

TRAIN_FILE = "train.jsonl"
VAL_FILE = "val.jsonl"
IGNORE_INDEX = -100  # the label value torch's cross-entropy skips
_SENTINEL = "\x00balabol-reply\x00"  # stands in for a reply to find where it starts


@dataclass(frozen=True)
class Sample:
    messages: tuple[dict[str, str], ...]
    session: str | None
    where: str  # "path:line", for error messages


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    target_bytes: int  # UTF-8 bytes of the text the labels cover (for bits per byte)
    truncated: bool

    @property
    def n_targets(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


@dataclass
class SplitStats:
    samples: int = 0
    kept: int = 0
    no_targets: int = 0  # nothing to learn (no assistant turn, or cut off by --max-length)
    truncated: int = 0
    tokens: int = 0
    target_tokens: int = 0
    lengths: list[int] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "lengths"}


# --- reading -----------------------------------------------------------------------------


def data_files(data: Path) -> tuple[Path, Path]:
    """(train.jsonl, val.jsonl) of a data directory, or a DataError saying how to make one."""
    data = Path(data)
    if not data.is_dir():
        problem = "is a file, not a directory" if data.exists() else "does not exist"
        raise DataError(
            f"data directory {data} {problem}; build one with `balabol data ...` "
            f"(it writes {TRAIN_FILE} and {VAL_FILE}) and pass it as --data"
        )
    train, val = data / TRAIN_FILE, data / VAL_FILE
    for path in (train, val):
        if not path.is_file():
            present = ", ".join(sorted(p.name for p in data.iterdir())) or "nothing"
            raise DataError(
                f"{data} has no {path.name} (it has: {present}); `balabol data ...` writes "
                f"{TRAIN_FILE} and {VAL_FILE}"
            )
    return train, val


def read_jsonl(path: Path) -> Iterator[Sample]:
    """Samples of one jsonl file, streamed; a bad line is a DataError naming file and line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{where}: not valid JSON ({e.msg}, column {e.colno}); each line must be "
                    '{"messages": [{"role": ..., "content": ...}, ...], "session": ...}'
                ) from e
            messages = obj.get("messages") if isinstance(obj, dict) else None
            if (
                not isinstance(messages, list)
                or not messages
                or not all(isinstance(m, Mapping) for m in messages)
            ):
                raise DataError(
                    f"{where}: expected an object with a non-empty list of messages, "
                    f'{{"messages": [{{"role": "user", "content": "..."}}, ...]}}; got {line.strip()[:80]!r}'
                )
            try:
                msgs = validate_messages(messages)
            except ConfigError as e:
                raise DataError(f"{where}: {e}") from e
            session = obj.get("session")
            yield Sample(tuple(msgs), None if session is None else str(session), where)


# --- encoding -----------------------------------------------------------------------------


def chat_tokenizer(model_dir: Path | str):
    """The model's tokenizer made to speak the chat format: its tokens added if missing (their
    ids are returned, they need trained embedding rows), eos = end of turn, the template set."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as e:
        raise BaseModelError(f"cannot load a tokenizer from {model_dir}: {e}") from e
    missing = [t for t in (BOS_TOKEN, EOS_TOKEN) if t not in tok.get_vocab()]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing})
    # The runtime stops at eos and pads with it: both must be the chat format's end of turn.
    tok.eos_token = EOS_TOKEN
    if tok.pad_token is None:
        tok.pad_token = EOS_TOKEN
    tok.chat_template = CHAT_TEMPLATE
    return tok, [tok.convert_tokens_to_ids(t) for t in missing]


def render_with_spans(
    messages: Sequence[Mapping[str, str]], *, template: str = CHAT_TEMPLATE
) -> tuple[str, list[tuple[int, int]]]:
    """The whole conversation as text, and the (start, end) characters of each assistant
    reply including the end-of-turn token that closes it."""
    msgs = [dict(m) for m in messages]
    text = render_chat(msgs, add_generation_prompt=False, template=template)
    spans = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        probe = [*msgs[:i], {"role": "assistant", "content": _SENTINEL}]
        rendered = render_chat(probe, add_generation_prompt=False, template=template)
        start = rendered.index(_SENTINEL)
        end = start + len(m["content"])
        if text[:start] != rendered[:start] or text[start:end] != m["content"]:
            raise ConfigError(
                "the chat template does not render a conversation turn by turn, so the "
                "assistant replies cannot be located; use balabol.prompt.CHAT_TEMPLATE"
            )
        if text.startswith(EOS_TOKEN, end):
            end += len(EOS_TOKEN)
        spans.append((start, end))
    return text, spans


def encode(
    messages: Sequence[Mapping[str, str]],
    tokenizer,
    *,
    assistant_only: bool = True,
    max_length: int | None = None,
    template: str = CHAT_TEMPLATE,
    lead: Sequence[int] | None = None,
) -> Encoded:
    """Token ids of the rendered conversation, as `balabol.prompt.encode` makes them (the
    tokenizer's own leading tokens, e.g. Gemma's <bos>, once); labels only on assistant
    replies (or on every text token with assistant_only=False). Longer samples keep their
    first max_length tokens. `lead`: leading_special_ids(tokenizer), if already known."""
    text, spans = render_with_spans(messages, template=template)
    if not assistant_only:
        spans = [(0, len(text))]
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            "training needs a fast tokenizer (tokenizer.json) to locate the assistant "
            "replies; save the base with a fast tokenizer"
        )
    lead = leading_special_ids(tokenizer) if lead is None else list(lead)
    # message contents as plain text: a "<|im_end|>" in the data is no end of turn (#19)
    segments = render_segments(messages, add_generation_prompt=False, template=template)
    ids, offsets = tokenize_segments(tokenizer, segments, offsets=True)
    n_lead = 0
    if ids[: len(lead)] != lead:
        n_lead = len(lead)
        ids, offsets = [*lead, *ids], [(0, 0)] * n_lead + offsets
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        ids, offsets = ids[:max_length], offsets[:max_length]
    labels = [
        tok if i >= n_lead and any(s <= start < e for s, e in spans) else IGNORE_INDEX
        for i, (tok, (start, _)) in enumerate(zip(ids, offsets, strict=True))
    ]
    cut = offsets[-1][1] if offsets else 0
    target_bytes = sum(len(text[s : min(e, cut)].encode("utf-8")) for s, e in spans if s < cut)
    return Encoded(ids, labels, target_bytes, truncated)


def load_split(
    path: Path,
    tokenizer,
    *,
    assistant_only: bool = True,
    max_length: int | None = None,
    template: str = CHAT_TEMPLATE,
) -> tuple[list[Encoded], SplitStats]:
    """Every sample of a jsonl file that has something to learn, with counts of the rest."""
    stats, out = SplitStats(), []
    lead = leading_special_ids(tokenizer)
    for sample in read_jsonl(path):
        stats.samples += 1
        enc = encode(
            sample.messages,
            tokenizer,
            assistant_only=assistant_only,
            max_length=max_length,
            template=template,
            lead=lead,
        )
        stats.truncated += enc.truncated
        if enc.n_targets == 0:
            stats.no_targets += 1
            continue
        stats.kept += 1
        stats.tokens += len(enc.input_ids)
        stats.target_tokens += enc.n_targets
        stats.lengths.append(len(enc.input_ids))
        out.append(enc)
    return out, stats


def collate(batch: Sequence[Encoded | Mapping], pad_id: int):
    """Right-padded tensors: input_ids, attention_mask, labels (-100 on padding)."""
    import torch

    rows = [
        (b.input_ids, b.labels) if isinstance(b, Encoded) else (b["input_ids"], b["labels"])
        for b in batch
    ]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, labs) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(labs)] = torch.tensor(labs)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def collate_packed(batch: Sequence[Encoded | Mapping]):
    """The samples laid end to end in one row: no padding at all. position_ids restart at 0
    for every sample, and `cu_seq_lens_q`/`cu_seq_lens_k` (where each sample starts, then
    the row's end) reach the model's attention function, which gives each sample a causal
    attention of its own (training/attention.py). Under transformers' stock attention the
    restarting position_ids alone give a block-diagonal mask
    (masking_utils.find_packed_sequence_indices), so no sample sees another either way. The
    first token of each sample has no label: it must not be predicted from the previous
    sample. `logits_to_keep` asks the model for the logits at labelled positions only (see
    `packed_loss`): on chat data most positions are prompt, and the LM head with its
    cross-entropy over the vocabulary is a large part of a small model's work."""
    import torch

    input_ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    starts = [0]
    for b in batch:
        ids, labs = (
            (b.input_ids, b.labels) if isinstance(b, Encoded) else (b["input_ids"], b["labels"])
        )
        input_ids += ids
        labels += [IGNORE_INDEX, *labs[1:]]
        positions += range(len(ids))
        starts.append(starts[-1] + len(ids))
    cu = torch.tensor(starts, dtype=torch.int32)
    label_row = torch.tensor([labels])
    # use_cache=False: with a cache object transformers does not look for packed sequences
    return {
        "input_ids": torch.tensor([input_ids]),
        "labels": label_row,
        # the positions whose next token has a label: the only logits the loss needs
        "logits_to_keep": (label_row[0, 1:] != IGNORE_INDEX).nonzero()[:, 0],
        "position_ids": torch.tensor([positions]),
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "use_cache": False,
    }


def packed_loss(outputs, labels, num_items_in_batch=None):
    """The causal LM loss of a `collate_packed` batch, whose logits are those of the
    positions in its `logits_to_keep`: the same sum over labelled tokens as transformers'
    ForCausalLMLoss, divided by num_items_in_batch (the labels in the whole optimizer step,
    as the HF Trainer counts them) or, without it, by the labels in this batch. For the
    Trainer's `compute_loss_func`."""
    import torch.nn.functional as F

    shifted = labels[:, 1:]
    targets = shifted[shifted != IGNORE_INDEX]
    logits = outputs.logits.float().reshape(-1, outputs.logits.shape[-1])
    if logits.shape[0] != targets.shape[0]:
        raise ValueError(
            f"packed loss: {logits.shape[0]} logits for {targets.shape[0]} labels; the batch "
            "must come from collate_packed, which asks for the labelled positions only"
        )
    loss = F.cross_entropy(logits, targets.to(logits.device), reduction="sum")
    return loss / (num_items_in_batch if num_items_in_batch is not None else max(len(targets), 1))


class ChatDataset:
    """A torch-style map dataset over encoded samples (dicts, as the HF Trainer expects)."""

    def __init__(self, samples: Sequence[Encoded]):
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        s = self.samples[i]
        return {"input_ids": s.input_ids, "labels": s.labels}
