"""Load the base, merge a LoRA adapter into it (peft `merge_and_unload`), save fp32 HF files.

Example: `balabol export --base default --adapter adapters/me` writes artifacts/<name>/hf/.
"""

from __future__ import annotations

import json
from pathlib import Path

from balabol import prompt
from balabol.errors import AdapterError, BaseModelError, require
from balabol.quiet import quiet

ADAPTER_CONFIG = "adapter_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def check_adapter(adapter: Path) -> dict:
    cfg = adapter / ADAPTER_CONFIG
    if not adapter.is_dir():
        raise AdapterError(f"adapter {adapter} is not a directory; train one with `balabol train`")
    if not cfg.is_file():
        raise AdapterError(
            f"{adapter} has no {ADAPTER_CONFIG}, so it is not a peft LoRA adapter "
            "(it is written by `balabol train` or PeftModel.save_pretrained)"
        )
    try:
        return json.loads(cfg.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AdapterError(f"{cfg} is not valid JSON ({e}); the adapter is corrupt") from e


def load_tokenizer(base: Path | str, adapter: Path | None):
    """The adapter's tokenizer when training saved one (it may have added tokens)."""
    from transformers import AutoTokenizer

    src = adapter if adapter and all((adapter / f).is_file() for f in TOKENIZER_FILES) else base
    try:
        tok = AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError) as e:
        raise BaseModelError(f"cannot load a tokenizer from {src}: {e}") from e
    if not tok.chat_template:
        tok.chat_template = prompt.CHAT_TEMPLATE
    return tok


def merge(base: Path | str, adapter: Path | None, out_dir: Path) -> None:
    """Write the (merged) model as fp32 safetensors plus tokenizer and chat template."""
    torch = require("torch", extra="export")
    from transformers import AutoModelForCausalLM

    try:
        with quiet():  # transformers' notices about generation config and tied weights
            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError) as e:
        raise BaseModelError(f"cannot load the base model from {base}: {e}") from e
    tokenizer = load_tokenizer(base, adapter)
    if adapter is not None:
        acfg = check_adapter(adapter)
        from peft import PeftModel

        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        try:
            with quiet():
                model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        except (RuntimeError, ValueError, KeyError) as e:
            raise AdapterError(
                f"adapter {adapter} does not fit base {base} (it was trained on "
                f"{acfg.get('base_model_name_or_path')!r}): {str(e).splitlines()[0][:300]}. "
                "Export it with the base it was trained on (--base)."
            ) from e
    model.config.use_cache = True
    with quiet():
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
