"""What both scratch baselines share: the config, the BPE tokenizer, and the run.

The story of `run` (the numbered steps of training/lora.py, where they differ):
 1. check the data and the output (nothing written if they fail);
 2. train a byte-level BPE tokenizer on the train split (or reuse the one an interrupted
    run saved), with the chat format's special tokens and template;
 3. tokenize with the chat format, labels on assistant replies only (training/dataset.py);
 4. build the architecture's model from scratch (spec.build), seeded;
 5. measure one step and print the estimate; train with LoRA's Trainer setup (warmup +
    cosine LR, eval every N steps, checkpoints in OUT_DIR/.NAME.train/, resume, best kept);
 6. write weights, tokenizer, template, config and metrics to OUT_DIR/NAME/ when complete.

Example: `balabol train --arch gpt-scratch --data data/jokes --n-layer 4 --max-steps 200`
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from balabol.errors import ConfigError
from balabol.prompt import BOS_TOKEN, CHAT_TEMPLATE, EOS_TOKEN, render_chat, template_sha256
from balabol.settings import models_dir
from training import dataset, lora

ARCH_NAMES = ("gpt-scratch", "lstm")
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


@dataclass(frozen=True)
class ArchSpec:
    """One scratch architecture: its defaults and how to build and save its model."""

    name: str  # the --arch value
    architecture: str  # what the manifest will call it
    defaults: dict[str, Any]  # n_layer, n_embd, n_head, dropout, lr, max_length
    build: Callable  # (cfg, tokenizer) -> torch model whose forward returns .loss
    save: Callable  # (model, directory) -> None
    describe: Callable  # (model) -> one line for the log


@dataclass(frozen=True)
class ScratchConfig(lora.RunConfig):
    LR_HINT = "from scratch ~1e-3"

    arch: str = "gpt-scratch"
    data: Path | None = None
    name: str | None = None
    out_dir: Path = field(default_factory=models_dir)
    # the model (None: the architecture's default)
    vocab_size: int = VOCAB_SIZE
    n_layer: int | None = None
    n_embd: int | None = None
    n_head: int | None = None
    dropout: float | None = None
    max_length: int | None = None  # tokens per sample = the model's context
    assistant_only: bool = True
    # how long and how fast
    epochs: float = lora.EPOCHS
    max_steps: int | None = None
    lr: float | None = None
    warmup_steps: int | None = None
    batch_size: int = lora.BATCH_SIZE
    micro_batch_size: int | None = None
    eval_every: int | None = None
    device: str = "auto"
    seed: int = lora.SEED
    resume: bool = False
    force: bool = False

    def __post_init__(self):
        from training.baselines import ARCHS

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
) -> lora.TrainResult:
    t_start = time.perf_counter()
    # 1. cheap checks first
    train_path, val_path = dataset.data_files(cfg.data)
    resume_step = lora.check_output(
        cfg, done_file="config.json", what="a trained model", resume_keys=RESUME_KEYS
    )

    # 2. the tokenizer, then 3. the encoded splits
    tokenizer = _tokenizer(cfg, train_path, resume_step, log)
    opts = {"assistant_only": cfg.assistant_only, "max_length": cfg.max_length}
    train_set, train_stats = dataset.load_split(train_path, tokenizer, **opts)
    val_set, val_stats = dataset.load_split(val_path, tokenizer, **opts)
    lora.check_splits(cfg, train_path, val_path, train_stats, val_stats, cfg.max_length, log)
    plan = lora.plan_device(cfg)
    sched = lora.schedule(cfg, len(train_set), plan)

    # 4. the model, from scratch
    from transformers import set_seed

    set_seed(cfg.seed)
    model = spec.build(cfg, tokenizer)
    if plan.device == "cuda":
        model.to("cuda")
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"{spec.name}: {spec.describe(model)}, {n_params / 1e6:.2f} M parameters; {plan.describe()}"
    )

    # 5. estimate, then train
    per_token = lora.probe(model, train_set, plan, tokenizer.pad_token_id)
    evals = sched.steps // sched.eval_every if val_set else 0
    estimate = per_token * (train_stats.tokens * sched.epochs + evals * val_stats.tokens / 3)
    remaining = estimate * (1 - (resume_step or 0) / sched.steps)
    peak = lora.peak_memory(plan.device) + 8 * n_params  # AdamW's two moments
    log(
        f"estimate: {sched.steps} steps (~{sched.epochs:.2f} epochs, eval every "
        f"{sched.eval_every}), ~{lora.duration(remaining)}{' remaining' if resume_step else ''}, "
        f"peak memory ~{lora.size(peak)} (measured {per_token * 1000:.1f} ms per token on the "
        "longest samples)"
    )
    trainer = lora.make_trainer(
        work_dir=cfg.work_dir,
        lr=cfg.lr,
        seed=cfg.seed,
        gradient_checkpointing=False,  # small models: activations fit, recomputing costs time
        batching="grouped",  # padded: packing needs a transformers model's attention kwargs
        plan=plan,
        sched=sched,
        model=model,
        tokenizer=tokenizer,
        train_set=train_set,
        val_set=val_set,
        progress=progress,
    )
    train_seconds = lora.fit(trainer, cfg, resume_step, callbacks, log)

    # 6. the model directory
    metrics = lora.run_metrics(
        trainer,
        sched,
        plan,
        resume_step,
        train_stats,
        val_stats,
        t_start=t_start,
        train_seconds=train_seconds,
        estimate=remaining,
        peak=peak,
    )
    metrics["parameters"] = n_params
    record = {
        **cfg.to_dict(),
        "architecture": spec.architecture,
        "tokenizer": {
            "type": "byte-level BPE",
            "pre_tokenizer": PRE_TOKENIZER,
            "size": len(tokenizer),
        },
        **dataclasses.asdict(sched),
        "lr_schedule": "linear warmup, cosine decay",
        "chat_template_sha256": template_sha256(CHAT_TEMPLATE),
    }
    model = trainer.model.to("cpu")  # the best step's weights (load_best_model_at_end)
    lora.write_output(cfg, lambda d: spec.save(model, d), tokenizer, record, metrics)
    shutil.rmtree(cfg.work_dir, ignore_errors=True)
    log(
        lora.summary(
            cfg,
            metrics,
            what="model",
            next_cmd=f"balabol export --base {cfg.out} --name {cfg.name}",
        )
    )
    return lora.TrainResult(cfg.out, metrics)
