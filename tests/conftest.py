"""Tiny random models with tokenizers trained on the spot: every code path in seconds, offline.

`tiny_model("llama")` / `tiny_model("gpt2")` build a 2-layer model and a byte-level BPE
tokenizer whose pre-tokenizer matches what llama.cpp calls 'smollm' / 'gpt2';
`tiny_model("gemma3")` a 6-layer Gemma 3 (5 sliding-window layers, 1 global) with a
SentencePiece BPE vocabulary built the way the embedded Gemma's is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from balabol.manifest import FORMATS, Artifact, Manifest
from balabol.prompt import BOS_TOKEN, CHAT_TEMPLATE, EOS_TOKEN, FEW_SHOT_TEMPLATE


def _corpus() -> list[str]:
    texts = Path(__file__).parents[1] / "balabol" / "texts"
    lines = []
    for name in ("heldout_en.txt", "calibration_en.txt"):
        lines += (texts / name).read_text(encoding="utf-8").split("\n")
    lines += [
        "Привет! Как дела? Встречаются как-то русский, немец и американец.",
        "def add(a, b):\n    return a + b  # 12345 67.89",
        "Hello 🚀 world 🦙 — emoji and dashes, 2026-11-25 10:30",
    ]
    return lines


def train_tokenizer(kind: str, vocab_size: int = 600):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = {
        "llama": pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        ),
        "gpt2": byte_level,
        "whitespace": pre_tokenizers.Whitespace(),  # llama.cpp has no equivalent
    }[kind]
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", BOS_TOKEN, EOS_TOKEN]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus() * 3, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token="<|endoftext|>",
        pad_token=EOS_TOKEN,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def train_sentencepiece_tokenizer(out: Path, vocab_size: int = 800):
    """Gemma-like: SentencePiece BPE, byte fallback, spaces as '▁', newline runs and space
    runs as user-defined tokens, <bos> added; made by the importer's own builder."""
    import io

    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    from balabol.bases import tokenizer_from_metadata

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus() * 3),
        model_writer=buf,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        user_defined_symbols=["\n", "\n\n", "  ", "    "],
        **dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3),
        **dict(pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>"),
        minloglevel=2,
    )
    pieces = sp_pb2.ModelProto.FromString(buf.getvalue()).pieces
    meta = {
        "general.architecture": "gemma3",
        "gemma3.context_length": 256,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [p.piece for p in pieces],
        "tokenizer.ggml.scores": [p.score for p in pieces],
        "tokenizer.ggml.token_type": [p.type for p in pieces],
        "tokenizer.ggml.padding_token_id": 0,
        "tokenizer.ggml.eos_token_id": 1,
        "tokenizer.ggml.bos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 3,
        "tokenizer.ggml.add_bos_token": True,
    }
    out.mkdir(parents=True, exist_ok=True)
    return tokenizer_from_metadata(meta, FEW_SHOT_TEMPLATE, work_dir=out)


def build_tiny(kind: str, out: Path, *, tokenizer_kind: str | None = None, seed: int = 0) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, GPT2Config, LlamaConfig

    if kind == "lstm":  # Balabol's own (balabol/lstm.py), with the scratch GPT's tokenizer
        from balabol import lstm

        tok = train_tokenizer("llama")
        torch.manual_seed(seed)
        config = lstm.LstmConfig(len(tok), n_embd=32, n_layer=2, context_length=256)
        model = lstm.build(config)
        torch.nn.init.normal_(model.head.weight, std=0.3)  # peaked, as initializer_range below
        lstm.save(model, out)
        tok.save_pretrained(out)
        return out
    if kind == "gemma3":
        tok = train_sentencepiece_tokenizer(out)
    else:
        tok = train_tokenizer(tokenizer_kind or kind)
    common = dict(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        # a wide init gives peaked next-token distributions, so argmax is not a coin toss
        initializer_range=0.3,
    )
    if kind == "gpt2":
        cfg = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, **common)
    elif kind == "gemma3":
        # llama.cpp's gemma3 makes every 6th layer global, as HF's default layer_types do;
        # a short window makes every parity sequence cross it.
        cfg = Gemma3TextConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=6,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=16,
            max_position_embeddings=256,
            **common,
        )
    else:
        cfg = LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=False,
            **common,
        )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    made: dict[str, Path] = {}

    def make(kind: str = "llama", tokenizer_kind: str | None = None) -> Path:
        key = f"{kind}-{tokenizer_kind}"
        if key not in made:
            made[key] = build_tiny(
                kind, tmp_path_factory.mktemp(key), tokenizer_kind=tokenizer_kind
            )
        return made[key]

    return make


# Random 2-layer models have flat, noisy next-token distributions, so quantization flips
# more argmaxes than on a trained model; these bars are for them only (issue #2).
def _tiny_gates():
    from export.parity import Gate

    return {
        "onnx": Gate(logits_atol=1e-4, min_greedy_agreement=1.0, max_ppl_ratio=1.0001),
        "onnx-int8": Gate(min_greedy_agreement=0.6, max_ppl_ratio=1.2),
        "gguf-f16": Gate(min_greedy_agreement=0.9, max_ppl_ratio=1.02),
        "gguf-q8_0": Gate(min_greedy_agreement=0.8, max_ppl_ratio=1.05),
        "gguf-q4_k_m": Gate(max_ppl_ratio=2.0),
        "gguf-q4_0": Gate(max_ppl_ratio=2.0),
    }


TINY_GATES = _tiny_gates()


def export_tiny(base: Path, out: Path, name: str, **kwargs):
    from export.pipeline import ExportConfig, run

    kwargs.setdefault("formats", tuple(FORMATS))  # the opt-in gguf-q4_0 too
    return run(
        ExportConfig(base=str(base), name=name, out_dir=out, gates=TINY_GATES, **kwargs),
        log=lambda _: None,
    )


@pytest.fixture(scope="session")
def exported_llama(tiny_model, tmp_path_factory):
    """(artifacts root, manifest) of the tiny llama exported to every format."""
    out = tmp_path_factory.mktemp("artifacts-llama")
    return out, export_tiny(tiny_model("llama"), out, "llama")


@pytest.fixture(scope="session")
def exported_gpt2(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts-gpt2")
    return out, export_tiny(tiny_model("gpt2"), out, "gpt2")


@pytest.fixture(scope="session")
def exported_lstm(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts-lstm")
    return out, export_tiny(tiny_model("lstm"), out, "lstm")


@pytest.fixture(scope="session")
def exported_gemma3(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts-gemma3")
    return out, export_tiny(tiny_model("gemma3"), out, "gemma3")


def made_up(
    speeds: dict[str, float | None], failed: tuple[str, ...] = (), name: str = "m"
) -> Manifest:
    """A manifest whose files `choose` ranks: only statuses, sizes and speeds matter."""
    arts = tuple(
        Artifact(
            fmt,
            FORMATS[fmt][0],
            FORMATS[fmt][1],
            1000,
            "x",
            "failed" if fmt in failed else "passed",
            decode_tokens_per_s=speed,
        )
        for fmt, speed in speeds.items()
    )
    return Manifest(name, "llama", {}, None, "t", arts, "now", "0")
