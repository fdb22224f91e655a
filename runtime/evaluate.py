"""`balabol eval`: perplexity, bits per byte, ROUGE-L, BLEU and reply speed of a model on
data/NAME/val.jsonl.

    balabol eval --data data/me                              # the embedded default base
    balabol eval --data data/me --adapter adapters/me        # base (from the adapter) + LoRA
    balabol eval --data data/me --artifact me --format torch # an exported artifact's hf/ files
    balabol eval --data data/me --artifact me --format onnx-int8   # ... or any exported file:
    balabol eval --data data/me --artifact me --format gguf-q4_k_m # onnx, onnx-int8, gguf-*
    BALABOL_REMOTE_URL=http://gpu-box:8000/v1 balabol eval --data data/me --format remote

What is measured, on the first --limit samples of val.jsonl (runtime/score.py):
- loss, perplexity and bits per byte on the assistant replies, teacher-forced, exactly the
  tokens `balabol train` puts the loss on (`balabol.labels`). Perplexity depends on the
  tokenizer; bits per byte (the same total log-loss, in bits, over the UTF-8 bytes of the
  reply text) does not, so it compares models with different tokenizers;
- ROUGE-L and corpus BLEU-4 (balabol/metrics.py) of a greedy reply to each sample's last
  assistant turn, given the conversation before it, against the reference reply;
- reply tokens per second of those greedy replies (batched for a torch model, one at a time,
  as served, for an exported file).

Every model is scored by a runtime backend (runtime/loader.py `open_file`): a base or base +
adapter (merged on load) by the torch backend, an exported file by the backend the bot runs
it with, so the numbers are those of the file the bot serves. Every format of an artifact
reads the same token ids (its hf/ tokenizer).

`--format remote` asks an OpenAI-compatible server (runtime/remote_backend.py; --artifact,
if given, is the model name to ask for) for the replies: ROUGE-L, BLEU and speed only, since
the server returns no logits to score.

The numbers go to data/NAME/eval/<model>.json; the printed table lists every model
evaluated on that data set so far, so runs (and formats of one artifact) compare side by side.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from cyclopts import Parameter

from balabol import bases, lstm
from balabol.cli import flags
from balabol.errors import AdapterError, ArtifactError, BaseModelError, ConfigError, DataError
from balabol.files import write_text
from balabol.manifest import FORMATS, Artifact, Manifest, verify
from balabol.prompt import BOS_TOKEN, EOS_TOKEN
from balabol.samples import data_files, read_jsonl
from balabol.settings import artifacts_dir
from runtime import score
from runtime.loader import REMOTE

LIMIT = 200  # samples scored; greedy decoding on a CPU costs about a second per reply
EVAL_DIR = "eval"


@dataclass(frozen=True)
class EvalConfig:
    # The docstrings are the help of `balabol eval`'s flags.
    data: Path | None = None
    """data directory with val.jsonl (from `balabol data`)"""
    base: str | None = None
    """base model: 'default' or an HF directory (with --adapter: default is the adapter's base)"""
    adapter: Path | None = None
    """a LoRA adapter directory from `balabol train`"""
    artifact: str | None = None
    """an exported artifact's name (under ./artifacts)"""
    format: str = "torch"  # one of FORMATS; the command's help lists them
    limit: int = LIMIT
    """score the first N val samples (0: all)"""
    max_new_tokens: int = score.MAX_NEW_TOKENS
    """greedy reply length for ROUGE-L and BLEU"""
    batch_size: int = score.BATCH_SIZE
    """sequences per forward pass"""
    out: Path | None = None
    """JSON to write (default: DATA/eval/<model>.json)"""
    artifacts_dir: Path = field(default_factory=artifacts_dir)
    """artifacts directory (default: ./artifacts)"""

    def __post_init__(self):
        if self.data is None:
            raise ConfigError("--data is required: a directory written by `balabol data ...`")
        object.__setattr__(self, "data", Path(self.data))
        if self.artifact and (self.base or self.adapter):
            raise ConfigError(
                "--artifact is a complete model; pass it alone, or --base/--adapter instead"
            )
        if self.format not in (*FORMATS, REMOTE):
            known = ", ".join((*FORMATS, REMOTE))
            raise ConfigError(f"--format {self.format!r}: known formats are {known}")
        if self.format == REMOTE and (self.base or self.adapter):
            raise ConfigError(
                "--format remote evaluates the model an OpenAI-compatible server holds; "
                "drop --base/--adapter (--artifact names the server's model, if needed)"
            )
        if self.format not in ("torch", REMOTE) and not self.artifact:
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
        if self.format == REMOTE:
            return f"remote-{self.artifact or 'default'}".replace("/", "-")
        if self.artifact:
            return f"artifact-{self.artifact}-{self.format}"
        if self.adapter:
            return f"adapter-{Path(self.adapter).resolve().name}"
        base = self.base or "default"
        return f"base-{base if _embedded(base) else Path(base).resolve().name}"

    @property
    def out_path(self) -> Path:
        return Path(self.out) if self.out else self.data / EVAL_DIR / f"{self.label}.json"


@flags(
    format=Parameter(help=f"the artifact's format to evaluate: {' | '.join(FORMATS)}"),
    artifacts_dir=Parameter(show_default=False),  # its help words it better than its value
)
@dataclass(frozen=True)
class Eval(EvalConfig):
    """EvalConfig as `balabol eval`'s flags."""


def evaluate(*, config: Annotated[Eval | None, Parameter(name="*")] = None) -> int:
    """Perplexity, bits per byte, ROUGE-L and BLEU on val.jsonl for a base, adapter or artifact."""
    # None: no flag given; the config says what is missing (--data)
    run(config or Eval())
    return 0


@dataclass
class Model:
    """A backend to score, what it is, and its contexts (samples; reply prompts)."""

    backend: Any
    source: dict[str, str]
    context: int
    reply_context: int


def run(cfg: EvalConfig, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    t = time.perf_counter()
    # 1. the samples (cheap; a bad file fails before a model is loaded)
    _, val_path = data_files(cfg.data)
    samples = []
    for s in read_jsonl(val_path):
        if any(m["role"] == "assistant" for m in s.messages):
            samples.append(s)
        if cfg.limit and len(samples) == cfg.limit:
            break
    if not samples:
        raise DataError(f"{val_path} has no sample with an assistant reply to score")
    # 2. the model, and 3. the numbers
    if cfg.format == REMOTE:
        return _write(cfg, val_path, t, *_remote(cfg, samples, log), log=log)
    exported = cfg.artifact and cfg.format != "torch"
    model = open_exported(cfg, samples) if exported else open_torch(cfg)
    log(f"evaluating {cfg.label} on {len(samples)} samples of {val_path}")
    try:
        result = score.score(
            model.backend,
            samples,
            context=model.context,
            reply_context=model.reply_context,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch_size,
        )
    finally:
        model.backend.close()
    return _write(cfg, val_path, t, model.source, result, log=log)


def _remote(cfg: EvalConfig, samples, log) -> tuple[dict, dict]:
    from runtime.loader import load

    backend = load(cfg.artifact or REMOTE, REMOTE)
    log(f"evaluating {cfg.label} ({backend.url}) on {len(samples)} samples; no logits remotely")
    result = score.score_replies(backend, samples, max_new_tokens=cfg.max_new_tokens)
    return {"url": backend.url, "model": backend.model or "(the server's default)"}, result


def _write(cfg: EvalConfig, val_path: Path, t: float, source, result, *, log) -> dict[str, Any]:
    result = {
        "model": cfg.label,
        "source": source,
        "data": str(val_path),
        "limit": cfg.limit,
        "max_new_tokens": cfg.max_new_tokens,
        **result,
        "seconds": round(time.perf_counter() - t, 2),
    }
    path = write_text(cfg.out_path, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
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


def open_exported(cfg: EvalConfig, samples) -> Model:
    """An exported file (onnx, onnx-int8, gguf-*) in the backend the bot runs it with."""
    from runtime.loader import open_file, serving_context
    from runtime.tokenizer import Tokenizer

    root, entry = open_artifact(cfg)
    manifest = Manifest.load(root)
    tokenizer = Tokenizer(root / "hf")
    missing = [t for t in (BOS_TOKEN, EOS_TOKEN) if tokenizer.token_to_id(t) is None]
    if missing:
        # the torch format gives them new (untrained) embedding rows; an exported file cannot
        raise ArtifactError(
            f"artifact {root.name!r} has no chat tokens ({', '.join(missing)}) in its "
            f"vocabulary, so {entry.format} cannot score the chat format; evaluate it with "
            "--format torch, or train an adapter with `balabol train` (it adds them) and "
            "export that"
        )
    context = manifest.context_length or 2048
    serving = serving_context(manifest)
    # the loss pass scores whole samples (up to the model's context, as torch does); replies
    # are asked with the context the bot gives the model
    longest = max(len(e.input_ids) for e in score.encode_samples(samples, tokenizer, context))
    backend = open_file(
        root / entry.path,
        entry.format,
        tokenizer=tokenizer,
        context_length=max(serving, longest),
        architecture=manifest.architecture,
    )
    # stop where the torch format stops: the chat format's end of turn
    backend.eos_ids = frozenset({tokenizer.token_to_id(EOS_TOKEN)})
    source = {"artifact": cfg.artifact, "format": cfg.format, "path": str(root / entry.path)}
    return Model(backend, source, context, serving)


def open_torch(cfg: EvalConfig) -> Model:
    """A base, a base + adapter, or an artifact's hf/ files in the torch backend, with the
    tokenizer made to speak the chat format (new chat tokens get new embedding rows)."""
    from balabol.labels import chat_tokenizer
    from runtime.loader import MAX_CONTEXT, open_file

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
    tokenizer, _ = chat_tokenizer(tok_dir)
    if lstm.is_lstm_dir(model_dir):  # `balabol train --arch lstm`: not a transformers model
        if adapter is not None:
            raise AdapterError(f"{model_dir} is an LSTM; it takes no LoRA adapter")
        arch, options = "lstm", {}
    else:
        arch, options = None, {"adapter": adapter, "device": _device()}
    try:
        backend = open_file(
            model_dir,
            "torch",
            tokenizer=tokenizer,
            context_length=MAX_CONTEXT,  # set from the model's config below
            architecture=arch,
            **options,
        )
    except ArtifactError as e:
        if cfg.artifact:
            raise
        raise BaseModelError(f"cannot load the model from {model_dir}: {e.__cause__ or e}") from e
    context = _context(backend.model)
    backend.context_length = context
    return Model(backend, source, context, context)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _context(model) -> int:
    c = model.config
    return int(getattr(c, "max_position_embeddings", 0) or getattr(c, "n_positions", 0) or 2048)


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
    # remote results have no log-loss (None): they come last
    results.sort(key=lambda r: (r["bits_per_byte"] is None, r["bits_per_byte"] or 0.0))
    rows = [tuple(h for _, h, _ in COLUMNS)]
    for r in results:
        cells = ["—" if r[k] is None else fmt.format(r[k]) for k, _, fmt in COLUMNS]
        cells[0] = ("* " if r["model"] == current else "  ") + cells[0]
        rows.append(tuple(cells))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(["", *lines, "", f"(* this run; all results in {Path(path).parent})"])
