"""Encoded chat samples as training batches: whole splits, padded and packed batches, the loss.

Reading a split's jsonl (`balabol.samples`) and encoding a conversation into token ids and
labels (`balabol.labels`) live in the core, because `balabol eval` (runtime/evaluate.py)
scores exactly the tokens training learns; their names are re-exported here for training.

Example: `balabol train --data data/me --name me` reads data/me/train.jsonl through this.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# re-exported: training's modules and tests know them as training.dataset.<name>
from balabol.labels import (  # noqa: F401
    IGNORE_INDEX,
    Encoded,
    chat_tokenizer,
    encode,
    render_with_spans,
)
from balabol.prompt import CHAT_TEMPLATE, leading_special_ids
from balabol.samples import TRAIN_FILE, VAL_FILE, Sample, data_files, read_jsonl  # noqa: F401


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
