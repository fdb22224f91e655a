"""`balabol eval`: perplexity, bits per byte, ROUGE-L and BLEU of a model on data/NAME/val.jsonl.

    balabol eval --data data/me                              # the embedded default base
    balabol eval --data data/me --adapter adapters/me        # base (from the adapter) + LoRA
    balabol eval --data data/me --artifact me --format torch # an exported artifact's hf/ files

What is measured, on the first --limit samples of val.jsonl:
- loss, perplexity and bits per byte on the assistant replies, teacher-forced, exactly the
  tokens `balabol train` puts the loss on. Perplexity depends on the tokenizer; bits per byte
  (the same total log-loss, in bits, over the UTF-8 bytes of the reply text) does not, so
  it compares models with different tokenizers;
- ROUGE-L and corpus BLEU-4 (training/metrics.py) of a greedy reply to each sample's last
  assistant turn, given the conversation before it, against the reference reply.

The numbers go to data/NAME/eval/<model>.json; the printed table lists every model
evaluated on that data set so far, so runs compare side by side.
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
from balabol.manifest import FORMATS, Manifest, verify
from balabol.prompt import encode as encode_text
from balabol.prompt import leading_special_ids
from balabol.settings import artifacts_dir
from training import dataset, metrics

LIMIT = 200  # samples scored; greedy decoding on a CPU costs about a second per reply
MAX_NEW_TOKENS = 64
BATCH_SIZE = 8
TOKENS_PER_FORWARD = 8192  # caps the (batch, time, vocab) logits tensor of the loss pass
EXAMPLES = 5  # replies kept in the JSON for a human to read
EVAL_DIR = "eval"
SUPPORTED_FORMATS = ("torch",)


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
        if self.format not in SUPPORTED_FORMATS:
            raise ConfigError(
                f"--format {self.format}: balabol eval reads only the torch artifact (hf/) for "
                "now; pass --format torch (it holds the same merged weights the other formats "
                "were checked against at export)"
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
    format: Annotated[
        str, "the artifact's format; only 'torch' (its hf/ directory) is supported for now"
    ] = "torch",
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
    # 2. the model
    model, tokenizer, source = load_model(cfg)
    log(f"evaluating {cfg.label} on {len(samples)} samples of {val_path}")
    # 3. the numbers
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


def load_model(cfg: EvalConfig):
    """(model, tokenizer, what it is) for a base, a base + adapter, or an artifact."""
    import torch
    from transformers import AutoModelForCausalLM

    if cfg.artifact:
        root = Path(cfg.artifacts_dir) / cfg.artifact
        if not root.is_dir():
            have = sorted(p.name for p in Path(cfg.artifacts_dir).glob("*/manifest.json"))
            raise ArtifactError(
                f"no artifact {cfg.artifact!r} in {cfg.artifacts_dir} (found: "
                f"{', '.join(have) or 'none'}); build it with `balabol export --name {cfg.artifact}`"
            )
        manifest = Manifest.load(root)
        entry = manifest.artifact(cfg.format)
        verify(root, entry)
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


def score(
    model,
    tokenizer,
    samples: Sequence[dataset.Sample],
    *,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = BATCH_SIZE,
) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    ctx = _context(model)
    dev = next(model.parameters()).device

    # 1. teacher-forced log-loss on the assistant replies
    lead = leading_special_ids(tokenizer)
    encoded = [dataset.encode(s.messages, tokenizer, max_length=ctx, lead=lead) for s in samples]
    encoded = sorted((e for e in encoded if e.n_targets), key=lambda e: len(e.input_ids))
    nll = 0.0
    n_tokens = n_bytes = 0
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
            n_tokens += sum(e.n_targets for e in batch)
            n_bytes += sum(e.target_bytes for e in batch)
    loss = nll / n_tokens

    # 2. greedy replies to the conversation before each sample's last assistant turn
    prompts, references, asked = [], [], []
    for s in samples:
        text, spans = dataset.render_with_spans(s.messages)
        last = max(i for i, m in enumerate(s.messages) if m["role"] == "assistant")
        prompts.append(text[: spans[-1][0]])
        references.append(s.messages[last]["content"])
        asked.append(next((m["content"] for m in s.messages[last::-1] if m["role"] == "user"), ""))
    replies = generate(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
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
        "examples": [
            {"user": u, "reference": r, "reply": g}
            for u, r, g in list(zip(asked, references, replies, strict=True))[:EXAMPLES]
        ],
    }


def generate(
    model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy replies, batched with left padding, stopping at the end-of-turn token. Prompts
    are tokenized by `balabol.prompt.encode`, as the runtime does; too long ones keep their
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
    lead = leading_special_ids(tokenizer)
    room = max(_context(model) - max_new_tokens - len(lead), 1)
    rows = []
    for p in prompts:
        ids = encode_text(tokenizer, p)
        rows.append(ids if len(ids) <= room + len(lead) else [*lead, *ids[-room:]])
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
                out[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    return [out[i] for i in range(len(prompts))]


# --- the table -----------------------------------------------------------------------------

COLUMNS = (
    ("model", "model", "{}"),
    ("samples", "samples", "{}"),
    ("perplexity", "ppl", "{:.2f}"),
    ("bits_per_byte", "bits/byte", "{:.3f}"),
    ("rouge_l", "ROUGE-L", "{:.3f}"),
    ("bleu", "BLEU", "{:.3f}"),
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
