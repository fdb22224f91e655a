"""`balabol train --arch gpt-scratch`: a small Llama (SmolLM2's architecture, narrower and
shallower) trained from scratch with its own BPE tokenizer -> models/NAME/.

It is a plain HF Llama directory, so `balabol export --base models/NAME` turns it into ONNX,
int8 and GGUF like any other base (the tokenizer's pre-tokenizer is llama.cpp's 'smollm').

Example: `balabol train --arch gpt-scratch --data data/jokes --name jokes-gpt --n-layer 10`
"""

from __future__ import annotations

from training.baselines.spec import ArchSpec

# ~10 layers as the seed systems' GPT; 256 wide: ~8 M parameters plus 2 M of embeddings
# (8k vocabulary, tied with the head), trainable on a CPU
DEFAULTS = {
    "n_layer": 10,
    "n_embd": 256,
    "n_head": 4,
    "dropout": 0.0,
    "lr": 1e-3,
    "max_length": 512,
}


def build(cfg, tokenizer):
    from transformers import AutoModelForCausalLM, LlamaConfig

    hidden = cfg.n_embd
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=-(-8 * hidden // 3 // 64) * 64,  # SwiGLU's 8/3, rounded up to 64
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_head,
        max_position_embeddings=cfg.max_length,
        attention_dropout=cfg.dropout,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = AutoModelForCausalLM.from_config(config)
    # The head shares the embedding: checkpoints leave it out, and the Trainer re-ties it
    # when it loads the best one instead of warning that the key is missing.
    model._keys_to_ignore_on_save = ["lm_head.weight"]
    model.config.use_cache = False  # training; turned back on when saved
    return model


def save(model, directory) -> None:
    model.config.use_cache = True
    model.save_pretrained(directory, safe_serialization=True)


def describe(model) -> str:
    c = model.config
    return (
        f"Llama, {c.num_hidden_layers} layers x {c.hidden_size} wide, {c.num_attention_heads} "
        f"heads, context {c.max_position_embeddings}, vocabulary {c.vocab_size}"
    )


SPEC = ArchSpec("gpt-scratch", "llama", DEFAULTS, build, save, describe)
