"""`balabol eval`: perplexity, bits per byte, ROUGE-L, BLEU and reply speed of a model on
data/NAME/val.jsonl.

    balabol eval --data data/me                              # the embedded default base
    balabol eval --data data/me --adapter adapters/me        # base (from the adapter) + LoRA
    balabol eval --data data/me --artifact me --format torch # an exported artifact's hf/ files
    balabol eval --data data/me --artifact me --format onnx-int8   # ... or any exported file:
    balabol eval --data data/me --artifact me --format gguf-q4_k_m # onnx, onnx-int8, gguf-*

What is measured, on the first --limit samples of val.jsonl:
- loss, perplexity and bits per byte on the assistant replies, teacher-forced, exactly the
  tokens `balabol train` puts the loss on. Perplexity depends on the tokenizer; bits per byte
  (the same total log-loss, in bits, over the UTF-8 bytes of the reply text) does not, so
  it compares models with different tokenizers;
- ROUGE-L and corpus BLEU-4 (training/metrics.py) of a greedy reply to each sample's last
  assistant turn, given the conversation before it, against the reference reply.
- reply tokens per second of those greedy replies (batched for a torch model, one stream
  through the runtime, as served, for an exported file).

Every format reads the same token ids (the artifact's hf/ tokenizer). torch runs the merged
checkpoint with transformers; onnx, onnx-int8 and the gguf files get their logits the way
the export parity gate reads them (export/parity.py, one sequence at a time) and their
greedy replies from the runtime backend that serves them (runtime/loader.py), so the
numbers are those of the file the bot runs.

The numbers go to data/NAME/eval/<model>.json; the printed table lists every model
evaluated on that data set so far, so runs (and formats of one artifact) compare side by side.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from balabol import bases
from balabol.errors import AdapterError, ArtifactError, BaseModelError, ConfigError, DataError
from balabol.manifest import FORMATS, Artifact, Manifest, verify
from balabol.prompt import encode_chat
from balabol.prompt import leading_special_ids
from balabol.settings import artifacts_dir
from training import dataset, metrics

LIMIT = 200  # samples scored; greedy decoding on a CPU costs about a second per reply
MAX_NEW_TOKENS = 64
BATCH_SIZE = 8
TOKENS_PER_FORWARD = 8192  # caps the (batch, time, vocab) logits tensor of the loss pass
EXAMPLES = 5  # replies kept in the JSON for a human to read
EVAL_DIR = "eval"


@dataclass(frozen=True)
class EvalConfig:
    data: Path | None = None
    base: str | None = None
    adapter: Path | None = None
    artifact: str | None = None
    format: str = "torch"
    limit: int = LIMIT
    max_new_tokens: int = MAX_NEW_TOKENS
    batch_size: int = BATCH_SIZE
    out: Path | None = None
    artifacts_dir: Path = field(default_factory=artifacts_dir)

    def __post_init__(self):
        if self.data is None:
            raise ConfigError("--data is required: a directory written by `balabol data ...`")
        object.__setattr__(self, "data", Path(self.data))
        if self.artifact and (self.base or self.adapter):
            raise ConfigError(
                "--artifact is a complete model; pass it alone, or --base/--adapter instead"
            )
        if self.format not in FORMATS:
            raise ConfigError(f"--format {self.format!r}: known formats are {', '.join(FORMATS)}")
        if self.format != "torch" and not self.artifact:
            raise ConfigError(
                f"--format {self.format} is the format of an exported artifact; pass "
                "--artifact NAME too (a base or an adapter is evaluated with torch; "
                "`balabol export` makes the other formats)"
            )
        if not isinstance(self.limit, int) or self.limit < 0:
            raise ConfigError(f"--limit {self.limit!r}: a number of samples, or 0 for all")
        for flag, value in (
            ("--max-new-tokens", self.max_new_tokens),
            ("--batch-size", self.batch_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{flag} {value!r}: must be a whole number >= 1")

    @property
    def label(self) -> str:
        if self.artifact:
            return f"artifact-{self.artifact}-{self.format}"
        if self.adapter:
            return f"adapter-{Path(self.adapter).resolve().name}"
        base = self.base or "default"
        return f"base-{base if _embedded(base) else Path(base).resolve().name}"

    @property
    def out_path(self) -> Path:
        return Path(self.out) if self.out else self.data / EVAL_DIR / f"{self.label}.json"


def evaluate(
    *,
    data: Annotated[Path | None, "data directory with val.jsonl (from `balabol data`)"] = None,
    base: Annotated[
        str | None,
        "base model: 'default' or an HF directory (with --adapter: default is the adapter's base)",
    ] = None,
    adapter: Annotated[Path | None, "a LoRA adapter directory from `balabol train`"] = None,
    artifact: Annotated[str | None, "an exported artifact's name (under ./artifacts)"] = None,
    format: Annotated[str, f"the artifact's format to evaluate: {' | '.join(FORMATS)}"] = "torch",
    limit: Annotated[int, "score the first N val samples (0: all)"] = LIMIT,
    max_new_tokens: Annotated[int, "greedy reply length for ROUGE-L and BLEU"] = MAX_NEW_TOKENS,
    batch_size: Annotated[int, "sequences per forward pass"] = BATCH_SIZE,
    out: Annotated[Path | None, "JSON to write (default: DATA/eval/<model>.json)"] = None,
    artifacts_dir: Annotated[Path | None, "artifacts directory (default: ./artifacts)"] = None,
) -> int:
    """Perplexity, bits per byte, ROUGE-L and BLEU on val.jsonl for a base, adapter or artifact."""
    cfg = EvalConfig(
        data=data,
        base=base,
        adapter=adapter,
        artifact=artifact,
        format=format,
        limit=limit,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        out=out,
        **({"artifacts_dir": artifacts_dir} if artifacts_dir else {}),
    )
    run(cfg)
    return 0


def run(cfg: EvalConfig, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    t = time.perf_counter()
    # 1. the samples (cheap; a bad file fails before a model is loaded)
    _, val_path = dataset.data_files(cfg.data)
    samples = []
    for s in dataset.read_jsonl(val_path):
        if any(m["role"] == "assistant" for m in s.messages):
            samples.append(s)
        if cfg.limit and len(samples) == cfg.limit:
            break
    if not samples:
        raise DataError(f"{val_path} has no sample with an assistant reply to score")
    # 2. the model, and 3. the numbers
    if cfg.artifact and cfg.format != "torch":
        root, entry = open_artifact(cfg)
        tokenizer = exported_tokenizer(root, entry)
        source = {"artifact": cfg.artifact, "format": cfg.format, "path": str(root / entry.path)}
        log(f"evaluating {cfg.label} on {len(samples)} samples of {val_path}")
        result = score_exported(root, entry, tokenizer, samples, max_new_tokens=cfg.max_new_tokens)
    else:
        model, tokenizer, source = load_model(cfg)
        log(f"evaluating {cfg.label} on {len(samples)} samples of {val_path}")
        result = score(
            model,
            tokenizer,
            samples,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch_size,
        )
    result = {
        "model": cfg.label,
        "source": source,
        "data": str(val_path),
        "limit": cfg.limit,
        "max_new_tokens": cfg.max_new_tokens,
        **result,
        "seconds": round(time.perf_counter() - t, 2),
    }
    path = cfg.out_path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    log(table(path, current=cfg.label))
    return result


# --- loading -------------------------------------------------------------------------------


def open_artifact(cfg: EvalConfig) -> tuple[Path, Artifact]:
    """The artifact's directory and its --format entry, checked the way the runtime checks
    them (runtime/loader.py), plus: the format passed its parity gate and its files still
    match the manifest's sha256."""
    from runtime.loader import artifact_dir, choose

    root = artifact_dir(cfg.artifact, cfg.artifacts_dir)
    manifest = Manifest.load(root)
    entry = choose(manifest, cfg.format)  # not built, or skipped at export: an ArtifactError
    if entry.status != "passed":
        why = "; ".join(entry.parity.get("failed", [])) or entry.status
        passed = ", ".join(a.format for a in manifest.usable()) or "none"
        raise ArtifactError(
            f"{cfg.format} of artifact {cfg.artifact!r} failed its parity gate at export "
            f"({why}), so it is not the model it claims to be; evaluate a passed format "
            f"(--format {passed}) or rebuild it with `balabol export --name {cfg.artifact} "
            "--force`"
        )
    verify(root, entry)
    return root, entry


def load_model(cfg: EvalConfig):
    """(model, tokenizer, what it is) for a base, a base + adapter, or a torch artifact."""
    import torch
    from transformers import AutoModelForCausalLM

    if cfg.artifact:
        root, entry = open_artifact(cfg)
        path = root / entry.path
        source = {"artifact": cfg.artifact, "format": cfg.format, "path": str(path)}
        model_dir, adapter = path, None
    elif cfg.adapter:
        adapter = Path(cfg.adapter)
        trained_on = _adapter_base(adapter)
        base = cfg.base or trained_on
        if base is None:
            raise AdapterError(
                f"{adapter} was not written by `balabol train` (no training_config.json), so "
                "its base is unknown; pass --base"
            )
        model_dir = bases.resolve(base)
        source = {"base": base, "adapter": str(adapter.resolve())}
    else:
        base = cfg.base or "default"
        model_dir, adapter = bases.resolve(base), None
        source = {"base": base}

    tok_dir = adapter if adapter and (adapter / "tokenizer.json").is_file() else model_dir
    tokenizer, _ = dataset.chat_tokenizer(tok_dir)
    from balabol import lstm

    if lstm.is_lstm_dir(model_dir):  # `balabol train --arch lstm`: not a transformers model
        if adapter is not None:
            raise AdapterError(f"{model_dir} is an LSTM; it takes no LoRA adapter")
        model = lstm.load(model_dir)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        except (OSError, ValueError, RuntimeError) as e:
            raise BaseModelError(f"cannot load the model from {model_dir}: {e}") from e
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
    if adapter is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        except (RuntimeError, ValueError, KeyError) as e:
            raise AdapterError(
                f"adapter {adapter} does not fit base {model_dir}: "
                f"{str(e).splitlines()[0][:300]}. Pass the base it was trained on (--base)."
            ) from e
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    return model, tokenizer, source


def exported_tokenizer(root: Path, entry: Artifact):
    """The artifact's hf/ tokenizer in the chat format, as the torch format reads it, so every
    format scores the same token ids. A tokenizer without the chat tokens is refused: the
    torch path gives them new (untrained) embedding rows, an exported file cannot."""
    tokenizer, added = dataset.chat_tokenizer(root / "hf")
    if added:
        missing = ", ".join(tokenizer.convert_ids_to_tokens(added))
        raise ArtifactError(
            f"artifact {root.name!r} has no chat tokens ({missing}) in its vocabulary, so "
            f"{entry.format} cannot score the chat format; evaluate it with --format torch, "
            "or train an adapter with `balabol train` (it adds them) and export that"
        )
    return tokenizer


def _embedded(base: str) -> bool:
    return base in bases.ALIASES or base in bases.EMBEDDED


def _adapter_base(adapter: Path) -> str | None:
    """The base an adapter was trained on, from the config `balabol train` wrote next to it
    (an embedded base by name, a directory by its absolute path)."""
    if not (adapter / "adapter_config.json").is_file():
        raise AdapterError(
            f"{adapter} has no adapter_config.json, so it is not a LoRA adapter; train one "
            "with `balabol train`"
        )
    cfg = adapter / "training_config.json"
    if not cfg.is_file():
        return None
    record = json.loads(cfg.read_text(encoding="utf-8"))
    return record["base"] if _embedded(record["base"]) else record.get("base_path", record["base"])


# --- scoring -------------------------------------------------------------------------------


def _context(model) -> int:
    c = model.config
    return int(getattr(c, "max_position_embeddings", 0) or getattr(c, "n_positions", 0) or 2048)


def _context_length(hf_config: dict) -> int:
    """_context of a config.json, without loading the model."""
    c = hf_config
    return int(c.get("max_position_embeddings") or c.get("n_positions") or 2048)


def _chunks(items: Sequence, size: int, tokens: int, length: Callable) -> list[list]:
    """Batches of at most `size` items and about `tokens` padded tokens (items pre-sorted)."""
    out, cur = [], []
    for it in items:
        if cur and (
            len(cur) == size or (len(cur) + 1) * max(length(it), *map(length, cur)) > tokens
        ):
            out.append(cur)
            cur = []
        cur.append(it)
    return [*out, cur] if cur else out


def _encode(samples: Sequence[dataset.Sample], tokenizer, context: int) -> list[dataset.Encoded]:
    """The samples with something to score, as `balabol train` tokenizes them, shortest first."""
    lead = leading_special_ids(tokenizer)
    encoded = [
        dataset.encode(s.messages, tokenizer, max_length=context, lead=lead) for s in samples
    ]
    encoded = sorted((e for e in encoded if e.n_targets), key=lambda e: len(e.input_ids))
    if not encoded:
        raise DataError(
            f"no assistant reply of the {len(samples)} samples fits in the model's context "
            f"({context} tokens); shorten the conversations (`balabol data ...`)"
        )
    return encoded


def _last_turns(
    samples: Sequence[dataset.Sample],
) -> tuple[list[list[dict[str, str]]], list[str], list[str]]:
    """(the messages before each sample's last assistant reply, that reply, the user's question)."""
    prompts, references, asked = [], [], []
    for s in samples:
        last = max(i for i, m in enumerate(s.messages) if m["role"] == "assistant")
        prompts.append(list(s.messages[:last]))
        references.append(s.messages[last]["content"])
        asked.append(next((m["content"] for m in s.messages[last::-1] if m["role"] == "user"), ""))
    return prompts, references, asked


def _numbers(
    samples: Sequence[dataset.Sample],
    encoded: Sequence[dataset.Encoded],
    nll: float,
    asked: Sequence[str],
    references: Sequence[str],
    replies: Sequence[str],
    *,
    tokenizer,
    reply_seconds: float,
) -> dict[str, Any]:
    n_tokens = sum(e.n_targets for e in encoded)
    # the replies' text re-tokenized: counted the same way for every format of a model
    reply_tokens = sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in replies)
    n_bytes = sum(e.target_bytes for e in encoded)
    loss = nll / n_tokens
    cand = [metrics.words(r) for r in replies]
    refs = [metrics.words(r) for r in references]
    return {
        "samples": len(samples),
        "target_tokens": n_tokens,
        "target_bytes": n_bytes,
        "loss": round(loss, 6),
        "perplexity": round(math.exp(min(loss, 50.0)), 4),
        "bits_per_byte": round(nll / math.log(2) / n_bytes, 6),
        "rouge_l": round(sum(map(metrics.rouge_l, cand, refs)) / len(cand), 6),
        "bleu": round(metrics.corpus_bleu(cand, refs), 6),
        # speed as eval generates: batched for torch, one stream (as served) for the others
        "reply_tokens": reply_tokens,
        "reply_tokens_per_second": round(reply_tokens / max(reply_seconds, 1e-9), 2),
        "examples": [
            {"user": u, "reference": r, "reply": g}
            for u, r, g in list(zip(asked, references, replies, strict=True))[:EXAMPLES]
        ],
    }


def _prompt_ids(tokenizer, prompts: Sequence[Sequence[dict]], *, context: int, max_new_tokens: int):
    """Prompts tokenized by `balabol.prompt.encode_chat`, as the runtime does; too long ones keep
    their leading special tokens and their latest tokens, leaving room for the reply."""
    lead = leading_special_ids(tokenizer)
    room = max(context - max_new_tokens - len(lead), 1)
    rows = []
    for p in prompts:
        ids = encode_chat(tokenizer, p)
        rows.append(ids if len(ids) <= room + len(lead) else [*lead, *ids[-room:]])
    return rows


def score(
    model,
    tokenizer,
    samples: Sequence[dataset.Sample],
    *,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = BATCH_SIZE,
) -> dict[str, Any]:
    """The numbers for a transformers model (a base, base + adapter, or a torch artifact)."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    dev = next(model.parameters()).device

    # 1. teacher-forced log-loss on the assistant replies
    encoded = _encode(samples, tokenizer, _context(model))
    nll = 0.0
    batches = _chunks(encoded, batch_size, TOKENS_PER_FORWARD, lambda e: len(e.input_ids))
    with torch.no_grad():
        for batch in tqdm(batches, desc="perplexity", unit="batch"):
            b = {k: v.to(dev) for k, v in dataset.collate(batch, tokenizer.pad_token_id).items()}
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            # position t predicts token t+1: (B, T-1, V) against (B, T-1)
            nll += F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(),
                b["labels"][:, 1:].flatten(),
                ignore_index=dataset.IGNORE_INDEX,
                reduction="sum",
            ).item()

    # 2. greedy replies to the conversation before each sample's last assistant turn
    prompts, references, asked = _last_turns(samples)
    t = time.perf_counter()
    replies = generate(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    seconds = time.perf_counter() - t
    return _numbers(
        samples,
        encoded,
        nll,
        asked,
        references,
        replies,
        tokenizer=tokenizer,
        reply_seconds=seconds,
    )


def generate(
    model, tokenizer, prompts: Sequence[Sequence[dict]], *, max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy replies, batched with left padding, stopping at the end-of-turn token. Prompts
    are tokenized by `balabol.prompt.encode_chat`, as the runtime does; too long ones keep their
    leading special tokens and their latest turns."""
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    dev = next(model.parameters()).device
    gen = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    rows = _prompt_ids(tokenizer, prompts, context=_context(model), max_new_tokens=max_new_tokens)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out: dict[int, str] = {}
    with torch.no_grad():
        for start in tqdm(range(0, len(order), batch_size), desc="replies", unit="batch"):
            idx = order[start : start + batch_size]
            width = max(len(rows[i]) for i in idx)
            input_ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for j, i in enumerate(idx):  # left padding: every prompt ends where replies start
                input_ids[j, width - len(rows[i]) :] = torch.tensor(rows[i])
                mask[j, width - len(rows[i]) :] = 1
            ids = model.generate(
                input_ids=input_ids.to(dev), attention_mask=mask.to(dev), generation_config=gen
            )
            for i, row in zip(idx, ids[:, width:], strict=True):
                # a character cut off by max_new_tokens decodes to U+FFFD; drop it, as the
                # runtime's streaming (runtime/base.py TextStream) does for the other formats
                text = tokenizer.decode(row, skip_special_tokens=True)
                out[i] = text.rstrip("\ufffd").strip()
    return [out[i] for i in range(len(prompts))]


# --- scoring an exported file (onnx, onnx-int8, gguf-*) ------------------------------------


def _onnx_logits(path: Path, n_ctx: int):
    from export.parity import OnnxLM

    return OnnxLM(path / "model.onnx")


def _gguf_logits(path: Path, n_ctx: int):
    from export.parity import GgufLM

    return GgufLM(path, n_ctx)


# format -> opener(path, n_ctx) of a model giving (T, V) logits of a whole sequence, the
# reader the parity gate used on that file at export; n_ctx: the longest sequence scored
FULL_LOGITS: dict[str, Callable] = {
    "onnx": _onnx_logits,
    "onnx-int8": _onnx_logits,
    "gguf-f16": _gguf_logits,
    "gguf-q8_0": _gguf_logits,
    "gguf-q4_k_m": _gguf_logits,
}
assert set(FULL_LOGITS) == set(FORMATS) - {"torch"}, "every exported format needs a reader"


def _lstm_onnx_logits(path: Path, n_ctx: int):
    from export.lstm import OnnxLstmLM

    return OnnxLstmLM(path / "model.onnx")


# (manifest architecture, format) -> opener, where an architecture has its own graph inputs
ARCH_FULL_LOGITS: dict[tuple[str, str], Callable] = {
    ("lstm", "onnx"): _lstm_onnx_logits,
    ("lstm", "onnx-int8"): _lstm_onnx_logits,
}


def score_exported(
    root: Path,
    entry: Artifact,
    tokenizer,
    samples: Sequence[dataset.Sample],
    *,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> dict[str, Any]:
    """The numbers for one exported file of the artifact in `root`: the same samples, token
    ids and truncation as the torch format, so the two compare number for number."""
    import numpy as np
    from tqdm.auto import tqdm

    from export.parity import nll as token_nll
    from runtime.base import GenerationConfig
    from runtime.loader import load

    config = root / "hf" / "config.json"
    if not config.is_file():
        raise ArtifactError(f"{config} is missing; re-export with `balabol export --force`")
    hf_config = json.loads(config.read_text(encoding="utf-8"))

    # 1. teacher-forced log-loss on the assistant replies, one sequence at a time; the model
    # is closed before the runtime opens its own copy for the replies (memory)
    encoded = _encode(samples, tokenizer, _context_length(hf_config))
    arch = Manifest.load(root).architecture
    opener = ARCH_FULL_LOGITS.get((arch, entry.format), FULL_LOGITS[entry.format])
    lm = opener(root / entry.path, max(len(e.input_ids) for e in encoded))
    nll = 0.0
    try:
        for e in tqdm(encoded, desc="perplexity", unit="sample"):
            logits = lm.logits(e.input_ids)  # (T, V)
            labels = np.asarray(e.labels[1:])  # position t predicts token t+1
            keep = labels != dataset.IGNORE_INDEX
            nll += float(token_nll(logits[:-1][keep], labels[keep]).sum())
    finally:
        lm.close()

    # 2. greedy replies from the backend the bot would run on this file
    prompts, references, asked = _last_turns(samples)
    backend = load(root.name, entry.format, root=root.parent)
    # stop where the torch format stops: the chat format's end of turn
    backend.eos_ids = frozenset({tokenizer.eos_token_id})
    greedy = GenerationConfig.greedy(max_new_tokens)
    rows = _prompt_ids(
        tokenizer, prompts, context=backend.context_length, max_new_tokens=max_new_tokens
    )
    t = time.perf_counter()
    try:
        replies = [
            "".join(backend.stream_ids(ids, greedy)).strip()
            for ids in tqdm(rows, desc="replies", unit="reply")
        ]
    finally:
        backend.close()
    seconds = time.perf_counter() - t
    return _numbers(
        samples,
        encoded,
        nll,
        asked,
        references,
        replies,
        tokenizer=tokenizer,
        reply_seconds=seconds,
    )


# --- the table -----------------------------------------------------------------------------

COLUMNS = (
    ("model", "model", "{}"),
    ("samples", "samples", "{}"),
    ("perplexity", "ppl", "{:.2f}"),
    ("bits_per_byte", "bits/byte", "{:.3f}"),
    ("rouge_l", "ROUGE-L", "{:.3f}"),
    ("bleu", "BLEU", "{:.3f}"),
    ("reply_tokens_per_second", "reply tok/s", "{:.1f}"),
)


def table(path: Path, *, current: str) -> str:
    """Every result next to `path` (all models evaluated on this data set), best bpb first."""
    results = []
    for p in sorted(Path(path).parent.glob("*.json")):
        try:
            results.append(json.loads(p.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, OSError):
            continue
    results = [r for r in results if all(k in r for k, _, _ in COLUMNS)]
    results.sort(key=lambda r: r["bits_per_byte"])
    rows = [tuple(h for _, h, _ in COLUMNS)]
    for r in results:
        cells = [fmt.format(r[k]) for k, _, fmt in COLUMNS]
        cells[0] = ("* " if r["model"] == current else "  ") + cells[0]
        rows.append(tuple(cells))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(["", *lines, "", f"(* this run; all results in {Path(path).parent})"])
