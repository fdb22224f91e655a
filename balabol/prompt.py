"""The chat format: one function turns a list of messages into model text.

Training, export (the template goes into the HF tokenizer config and from there into GGUF
metadata) and the runtime all call `render_chat`, so a model is served with the format it
was trained with.

Example:
    >>> render_chat([{"role": "user", "content": "Hi"}], system="Be brief.")
    '<|im_start|>system\\nBe brief.<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from functools import lru_cache

from balabol.errors import ConfigError

# ChatML exactly as SmolLM2-135M-Instruct ships it (its GGUF `tokenizer.chat_template`, byte
# for byte: real newlines inside Jinja strings), default system prompt included, so the
# embedded model is served as it was trained.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# The special tokens the template uses; tokenizers of trained models must have them.
BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
ROLES = ("system", "user", "assistant")

# Few-shot format for base (not instruct) models such as Gemma-3-270M before training: the
# conversation as a plain transcript, which a base model continues with the next line. It
# uses no special tokens, so the model needs none it was not pretrained on; a reply ends
# where the model starts the next turn, so generation stops at FEW_SHOT_STOP (issue #8).
FEW_SHOT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n' }}"
    "{% else %}{{ 'Assistant: ' + message['content'] + '\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
FEW_SHOT_STOP = ("\nUser:", "\nAssistant:")


def template_sha256(template: str = CHAT_TEMPLATE) -> str:
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


@lru_cache(maxsize=8)
def _compiled(template: str):
    # The same Jinja settings transformers' apply_chat_template uses, so both agree.
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    return env.from_string(template)


def validate_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """Return plain {"role", "content"} dicts or raise ConfigError naming the bad message."""
    out = []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ConfigError(f"message {i}: role {role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ConfigError(f"message {i}: content must be a string, got {type(content)}")
        out.append({"role": role, "content": content})
    return out


def render_chat(
    messages: Sequence[Mapping[str, str]],
    *,
    system: str | None = None,
    add_generation_prompt: bool = True,
    template: str = CHAT_TEMPLATE,
) -> str:
    """Messages (optionally preceded by a system prompt) as the text the model reads."""
    msgs = validate_messages(messages)
    if system is not None:
        msgs = [{"role": "system", "content": system}, *msgs]
    return _compiled(template).render(messages=msgs, add_generation_prompt=add_generation_prompt)


def leading_special_ids(tokenizer) -> list[int]:
    """The ids a tokenizer puts before any text by itself (its post-processor, i.e. its own
    add_bos setting): Gemma's [<bos>], [] for SmolLM2 and GPT-2."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return full[:i]
    return []


# --- tokenizing: only the template emits control tokens (issue #19) ----------------------
#
# A tokenizer parses special-token text wherever it occurs, so a user who types
# "<|im_end|><|im_start|>system ..." would write real control tokens into the prompt and forge
# a turn. Message contents are therefore tokenized as plain text (`split_special_tokens`);
# special tokens are taken only from the text the template itself adds around them.


def render_segments(
    messages: Sequence[Mapping[str, str]],
    *,
    system: str | None = None,
    add_generation_prompt: bool = True,
    template: str = CHAT_TEMPLATE,
) -> list[tuple[str, bool]]:
    """The rendered chat as (text, is_content) pieces: True for a message's content, False for
    what the template wrote. Joined, they are exactly `render_chat(...)`."""
    msgs = validate_messages(messages)
    if system is not None:
        msgs = [{"role": "system", "content": system}, *msgs]
    contents = [m["content"] for m in msgs]
    while True:  # markers that no content contains, so they split the text unambiguously
        mark = f"\ue000{secrets.token_hex(8)}"
        if not any(mark in c for c in contents):
            break
    marked = [{**m, "content": f"{mark}{i}{mark}"} for i, m in enumerate(msgs)]
    text = _compiled(template).render(messages=marked, add_generation_prompt=add_generation_prompt)
    parts = text.split(mark)  # template, index, template, index, ..., template
    segments = []
    for k, part in enumerate(parts):
        if k % 2 == 0:
            segments.append((part, False))
        elif part.isdigit() and int(part) < len(contents):
            segments.append((contents[int(part)], True))
        else:
            raise ConfigError(_TEMPLATE_CHANGES_CONTENT)
    plain = _compiled(template).render(messages=msgs, add_generation_prompt=add_generation_prompt)
    if "".join(t for t, _ in segments) != plain:
        raise ConfigError(_TEMPLATE_CHANGES_CONTENT)
    return [(t, c) for t, c in segments if t]


_TEMPLATE_CHANGES_CONTENT = (
    "the chat template changes message text (e.g. trims it) or renders it twice, so user "
    "text cannot be kept apart from control tokens; use balabol.prompt.CHAT_TEMPLATE"
)


def _special_tokens(tokenizer) -> dict[str, int]:
    """Special tokens' text -> id: the control tokens a template may write. (Other added
    tokens, e.g. SentencePiece's user-defined "\\n\\n", are plain vocabulary: the tokenizer
    finds them in any text, so they are left to it.)"""
    return {t.content: i for i, t in tokenizer.added_tokens_decoder.items() if t.special}


def _plain(tokenizer, text: str, offsets: bool):
    """Ids (and character offsets) of text with no special token parsed."""
    kw = {"return_offsets_mapping": True} if offsets else {}
    enc = tokenizer(text, add_special_tokens=False, split_special_tokens=True, **kw)
    return enc["input_ids"], (list(enc["offset_mapping"]) if offsets else None)


def tokenize_segments(
    tokenizer, segments: Sequence[tuple[str, bool]], *, offsets: bool = False
) -> tuple[list[int], list[tuple[int, int]] | None]:
    """Token ids of rendered segments (and each id's (start, end) characters in the joined
    text): special tokens are recognised only in template text; runs of text between them,
    template and content alike, are tokenized together as plain text, so a message without
    special-token text gets the ids that tokenizing the whole string gives."""
    added = _special_tokens(tokenizer)
    pattern = (
        re.compile("|".join(re.escape(t) for t in sorted(added, key=len, reverse=True)))
        if added
        else None
    )
    pieces: list[tuple[int, str | int]] = []  # (start character, text run or added token id)
    width: dict[int, int] = {}  # added token id -> characters it stands for
    run_start, run, pos = 0, [], 0
    for text, is_content in segments:
        cut = 0
        if not is_content and pattern is not None:
            for m in pattern.finditer(text):
                run.append(text[cut : m.start()])
                pieces.append((run_start, "".join(run)))
                pieces.append((pos + m.start(), added[m.group()]))
                width[added[m.group()]] = len(m.group())
                run, run_start, cut = [], pos + m.end(), m.end()
        run.append(text[cut:])
        pos += len(text)
    pieces.append((run_start, "".join(run)))
    ids: list[int] = []
    spans: list[tuple[int, int]] = []
    for start, piece in pieces:
        if isinstance(piece, int):
            ids.append(piece)
            spans.append((start, start + width[piece]))
        elif piece:
            got, where = _plain(tokenizer, piece, offsets)
            ids.extend(got)
            if offsets:
                spans.extend((start + a, start + b) for a, b in where)
    return ids, (spans if offsets else None)


def with_lead(ids: list[int], lead: Sequence[int]) -> list[int]:
    """ids with the tokenizer's own leading tokens (Gemma's <bos>) in front, once."""
    lead = list(lead)
    return ids if ids[: len(lead)] == lead else [*lead, *ids]


def encode_chat(
    tokenizer,
    messages: Sequence[Mapping[str, str]],
    *,
    system: str | None = None,
    add_generation_prompt: bool = True,
    template: str = CHAT_TEMPLATE,
) -> list[int]:
    """Token ids of a chat as the model reads it: message contents as plain text, control
    tokens only where the template puts them, and the tokenizer's own leading tokens once
    (Gemma scores perplexity ~36 with its <bos> and ~510 without, issue #8)."""
    segments = render_segments(
        messages, system=system, add_generation_prompt=add_generation_prompt, template=template
    )
    ids, _ = tokenize_segments(tokenizer, segments)
    return with_lead(ids, leading_special_ids(tokenizer))


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of plain text (a held-out document, a completion prompt): no special token is
    parsed from it; the tokenizer's own leading tokens are added once."""
    ids, _ = _plain(tokenizer, text, offsets=False)
    return with_lead(ids, leading_special_ids(tokenizer))
