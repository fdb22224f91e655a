"""Small chat data sets for the training tests, in the `balabol data` output format."""

from __future__ import annotations

import json
from pathlib import Path

PAIRS = (
    ("hi", "hello there!"),
    ("how are you?", "fine, thanks."),
    ("what is 2+2?", "it is 4."),
    ("bye", "see you soon!"),
)


def chat(user: str, reply: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return path


def write_data(root: Path, *, n_train: int = 32, n_val: int = 8) -> Path:
    """data/NAME with train.jsonl and val.jsonl of the same four exchanges, repeated."""

    def rows(n, prefix):
        return [
            {"messages": chat(*PAIRS[i % len(PAIRS)]), "session": f"{prefix}{i}"} for i in range(n)
        ]

    write_jsonl(root / "train.jsonl", rows(n_train, "t"))
    write_jsonl(root / "val.jsonl", rows(n_val, "v"))
    return root


def build_plain_gpt2(out: Path) -> Path:
    """A tiny GPT-2 whose tokenizer lacks the chat tokens (like real GPT-2 or ruGPT-3)."""
    from importlib import resources

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, GPT2Config, PreTrainedTokenizerFast

    text = resources.files("balabol.texts").joinpath("heldout_en.txt").read_text("utf-8")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(text.split("\n") + [a for pair in PAIRS for a in pair], trainer)
    eot = "<|endoftext|>"
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot
    )
    cfg = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, vocab_size=len(hf_tok))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    hf_tok.save_pretrained(out)
    return out
