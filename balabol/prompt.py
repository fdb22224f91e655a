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


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of model text (a rendered chat, a few-shot transcript or plain text).

    Special tokens written in the text (the template's) are parsed, and the tokenizer's own
    leading tokens are added once: Gemma scores perplexity ~36 with its <bos> and ~510
    without (issue #8), while SmolLM2 and GPT-2 add nothing. One rule for every model.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    lead = leading_special_ids(tokenizer)
    return ids if ids[: len(lead)] == lead else [*lead, *ids]
