"""What both scratch baselines share: the table of them, the config, the BPE tokenizer, and
the run.

The story of `run`:
 1. check the data and the output (nothing written if they fail);
 2. train a byte-level BPE tokenizer on the train split (or reuse the one an interrupted
    run saved), with the chat format's special tokens and template;
 3. hand the rest to `harness.train_and_save` (the sequence LoRA runs too: encode, plan,
    measure, train, write OUT_DIR/NAME/ when complete) with a recipe that builds the
    architecture's model from scratch (spec.build) and saves it (spec.save).

Example: `balabol train --arch gpt-scratch --data data/jokes --n-layer 4 --max-steps 200`
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from balabol.errors import ConfigError
from balabol.prompt import BOS_TOKEN, CHAT_TEMPLATE, EOS_TOKEN, render_chat
from balabol.settings import models_dir
from training import dataset, harness
from training.baselines.lstm import SPEC as LSTM
from training.baselines.scratch_gpt import SPEC as GPT
from training.baselines.spec import ArchSpec
from training.config import RunConfig
from training.plan import Plan

VOCAB_SIZE = 8000
UNK_TOKEN = "<|endoftext|>"  # byte-level BPE never needs it; HF tokenizers want one named
TOKENIZER_DIR = "tokenizer"  # inside the work dir, so a resumed run keeps its vocabulary
# llama.cpp's 'smollm' pre-tokenizer (export/gguf_convert.py matches it structurally), so the
# scratch GPT goes to GGUF like SmolLM2 does
PRE_TOKENIZER = "smollm"
# What must match for a checkpoint to be resumed.
RESUME_KEYS = (
    "arch",
    "vocab_size",
    "n_layer",
    "n_embd",
    "n_head",
    "dropout",
    "max_length",
    "assistant_only",
    "batch_size",
    "seed",
)


# --arch -> what differs between the scratch models (training/train.py's ARCHS runs them)
ARCHS: dict[str, ArchSpec] = {spec.name: spec for spec in (GPT, LSTM)}


@dataclass(frozen=True)
class ScratchConfig(RunConfig):
    LR_HINT = "from scratch ~1e-3"

    # The docstrings are the help of `balabol train`'s flags (training/train.py).
    arch: str = "gpt-scratch"
    out_dir: Path = field(default_factory=models_dir)
    # the model (None: the architecture's default, as are max_length, its context, and lr)
    vocab_size: int = VOCAB_SIZE
    """BPE vocabulary size (default 8000)"""
    n_layer: int | None = None
    """layers (default: gpt-scratch 10, lstm 2)"""
    n_embd: int | None = None
    """width (default: gpt-scratch 256, lstm 512)"""
    n_head: int | None = None
    """attention heads, gpt-scratch only (default 4)"""
    dropout: float | None = None
    """dropout (default: gpt-scratch 0, lstm 0.1)"""

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ConfigError(f"--arch {self.arch!r}: one of lora, {', '.join(ARCHS)}")
        defaults = ARCHS[self.arch].defaults
        for key in ("n_head",):
            if getattr(self, key) is not None and key not in defaults:
                flag = "--" + key.replace("_", "-")
                raise ConfigError(
                    f"{flag} does not apply to --arch {self.arch} (it has no attention)"
                )
        for key, value in defaults.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        self.check_run(
            example_name="jokes-gpt",
            positive={
                "--vocab-size": self.vocab_size,
                "--n-layer": self.n_layer,
                "--n-embd": self.n_embd,
                "--n-head": self.n_head,
            },
        )
        if self.vocab_size < 300:
            raise ConfigError(
                f"--vocab-size {self.vocab_size}: at least 300 (256 bytes plus special tokens)"
            )
        if self.n_head and self.n_embd % self.n_head:
            raise ConfigError(
                f"--n-embd {self.n_embd} must be a multiple of --n-head {self.n_head}"
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout {self.dropout}: must be in [0, 1)")


# --- the tokenizer -------------------------------------------------------------------------


def training_texts(path: Path) -> Iterable[str]:
    """Each sample as the model reads it, without the special tokens (the BPE trainer would
    otherwise spend merges on their pieces; they are whole tokens anyway)."""
    for sample in dataset.read_jsonl(path):
        text = render_chat(sample.messages, add_generation_prompt=False)
        yield text.replace(BOS_TOKEN, "").replace(EOS_TOKEN, "")


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE tokenizer (llama.cpp's 'smollm' pre-tokenizer: single digits, then
    GPT-2's byte-level split) with the chat tokens, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[UNK_TOKEN, BOS_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,  # the runtime stops at the end of a turn
        unk_token=UNK_TOKEN,
        pad_token=EOS_TOKEN,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def _tokenizer(cfg: ScratchConfig, train_path: Path, resume_step: int | None, log):
    from transformers import AutoTokenizer

    saved = cfg.work_dir / TOKENIZER_DIR
    if resume_step is not None and (saved / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(saved)
    t = time.perf_counter()
    tok = train_tokenizer(training_texts(train_path), cfg.vocab_size)
    log(
        f"tokenizer: byte-level BPE, {len(tok)} tokens (asked {cfg.vocab_size}), trained on "
        f"{train_path} in {time.perf_counter() - t:.1f} s"
    )
    tok.save_pretrained(saved)
    return tok


# --- the run -------------------------------------------------------------------------------


def run(
    spec: ArchSpec,
    cfg: ScratchConfig,
    *,
    log: Callable[[str], None] = print,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
) -> harness.TrainResult:
    """Train spec's model from scratch -> cfg.out (see the module's story)."""
    t_start = time.perf_counter()
    # 1. cheap checks first
    data = dataset.data_files(cfg.data)
    resume_step = harness.check_output(
        cfg, done_file="config.json", what="a trained model", resume_keys=RESUME_KEYS
    )

    # 2. the tokenizer
    tokenizer = _tokenizer(cfg, data[0], resume_step, log)

    def build(plan: Plan) -> harness.Built:
        model = spec.build(cfg, tokenizer)
        if plan.device == "cuda":
            model.to("cuda")
        n_params = sum(p.numel() for p in model.parameters())
        line = f"{spec.name}: {spec.describe(model)}, {n_params / 1e6:.2f} M parameters"
        return harness.Built(model, n_params, line, metrics={"parameters": n_params})

    # 3. the shared sequence: plan, probe, fit, metrics, write
    recipe = harness.Recipe(
        data=data,
        resume_step=resume_step,
        started=t_start,
        tokenizer=tokenizer,
        max_length=cfg.max_length,
        build=build,
        save=lambda model, d: spec.save(model.to("cpu"), d),
        record={
            "architecture": spec.architecture,
            "tokenizer": {
                "type": "byte-level BPE",
                "pre_tokenizer": PRE_TOKENIZER,
                "size": len(tokenizer),
            },
        },
        gradient_checkpointing=False,  # small models: activations fit, recomputing costs time
        batching="grouped",  # padded: packing needs a transformers model's attention kwargs
        what="model",
        next_cmd=f"balabol export --base {cfg.out} --name {cfg.name}",
    )
    return harness.train_and_save(cfg, recipe, log=log, callbacks=callbacks, progress=progress)
