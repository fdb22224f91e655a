"""Chat samples -> token ids and labels, with the loss on assistant turns only (switchable).

A conversation is rendered with `balabol.prompt.render_chat`, the function export and the
runtime use, and tokenized as the runtime tokenizes it (`balabol.prompt.tokenize_segments`:
message text is plain text, control tokens come only from the template), so a model is trained
and scored on the ids it is served. Labels are -100 except on each assistant reply and the
`<|im_end|>` that closes it (so the model learns to stop). `balabol train` learns from these
labels and `balabol eval` scores them, so both count the same tokens and bytes.

Example: `balabol train --data data/me --name me` encodes data/me/train.jsonl through this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from balabol.errors import BaseModelError, ConfigError
from balabol.prompt import (
    BOS_TOKEN,
    CHAT_TEMPLATE,
    EOS_TOKEN,
    leading_special_ids,
    render_chat,
    render_segments,
    tokenize_segments,
)

IGNORE_INDEX = -100  # the label value torch's cross-entropy skips
_SENTINEL = "\x00balabol-reply\x00"  # stands in for a reply to find where it starts


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    target_bytes: int  # UTF-8 bytes of the text the labels cover (for bits per byte)
    truncated: bool

    @property
    def n_targets(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


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
