"""Load a backend for an artifact by name and format, through its manifest only.

`auto` picks the fastest format that passed its parity gate and fits in free memory, by the
decode speed the export measured for each file (an older manifest without speeds: by the
fixed SPEED_ORDER); `gguf` picks the fastest passed GGUF file the same way. Files are
checked against the manifest's sizes (and, with verify=True, sha256) before native code
touches them.

`open_file` opens one file (or directory) of a given format without a manifest: the parity
gate checks each file with it while the export is still being built, and `balabol eval`
scores a base model with it. `load` goes through it too, so both read a file the same way.

Example: `balabol chat --artifact smollm2-135m-instruct --format auto`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from balabol.architectures import named
from balabol.errors import ArtifactError
from balabol.manifest import FORMATS, Artifact, Manifest, verify
from balabol.settings import DEFAULT_ARTIFACT, artifacts_dir, available_memory, cpu_threads


def _torch(*a, **k):
    from runtime.torch_backend import TorchBackend

    return TorchBackend.open(*a, **k)


def _onnx(path, **k):
    from runtime.onnx_backend import OnnxBackend

    # an artifact's onnx/ directory, or one .onnx file (the int8 search's candidates)
    return OnnxBackend.open(path / "model.onnx" if path.is_dir() else path, **k)


def _gguf(*a, parallel: int = 1, **k):
    from runtime.gguf_backend import GgufBackend

    return GgufBackend.open(*a, parallel=parallel, **k)


def _lstm_onnx(*a, **k):
    from runtime.lstm_backend import LstmOnnxBackend

    return LstmOnnxBackend.open(*a, **k)


def _lstm_torch(*a, **k):
    from runtime.lstm_backend import LstmTorchBackend

    return LstmTorchBackend.open(*a, **k)


@dataclass(frozen=True)
class Reader:
    """How the runtime reads one format."""

    module: str  # the library its backend imports (the bot offers a format only if installed)
    # opener(path, tokenizer=, context_length=, fmt=, threads=, **options)
    open: Callable
    # manifest architecture -> opener, where an architecture needs its own decode step
    by_architecture: Mapping[str, Callable] = field(default_factory=dict)

    def opener(self, architecture: str | None) -> Callable:
        return self.by_architecture.get(architecture, self.open)


# format -> its reader; which formats exist for an architecture: balabol/architectures.py
BACKENDS: dict[str, Reader] = {
    "torch": Reader("torch", _torch, {"lstm": _lstm_torch}),
    "onnx": Reader("onnxruntime", _onnx, {"lstm": _lstm_onnx}),
    "onnx-int8": Reader("onnxruntime", _onnx, {"lstm": _lstm_onnx}),
    "gguf-f16": Reader("llama_cpp", _gguf),
    "gguf-q8_0": Reader("llama_cpp", _gguf),
    "gguf-q4_k_m": Reader("llama_cpp", _gguf),
    "gguf-q4_0": Reader("llama_cpp", _gguf),
}
# fastest first (measured on 2 cores, see benchmarks/): the order `ranked` falls back to for
# files whose manifest entry has no measured speed (exports older than the measurement)
SPEED_ORDER = (
    "gguf-q4_0",
    "gguf-q4_k_m",
    "gguf-q8_0",
    "onnx-int8",
    "gguf-f16",
    "onnx",
    "torch",
)
ALIASES = {"gguf": tuple(f for f in SPEED_ORDER if f.startswith("gguf-")), "auto": SPEED_ORDER}
MAX_CONTEXT = 2048
REMOTE = "remote"  # an OpenAI-compatible server, not a file: `load` handles it first
PARALLEL_ENV = "BALABOL_PARALLEL"
# Chats the gguf backend decodes together by default. Each slot reserves a full context of KV
# cache (SmolLM2-135M: 23 KB a token, 47 MB a slot at 2048). Aggregate decode tokens/s by
# streams decoded together, SmolLM2-135M q4_k_m on the 2-core machine (busy: 1 thread each),
# two runs: 1: 5.2 / 30.9, 2: 7.1 / 31.9, 4: 12.3 / 56.5, 8: 9.6 / 56.4. 8 gains nothing over
# 4 and doubles the KV memory, so 4. Measured by
#   python -m pytest benchmarks/test_multichat.py -k sweep --artifact smollm2-135m-instruct
AUTO_PARALLEL = 4


def parallel(value: str | int | None = None) -> int:
    """How many chats to decode together: `value`, else $BALABOL_PARALLEL, else auto."""
    raw = os.environ.get(PARALLEL_ENV, "auto") if value is None else value
    if str(raw).strip().lower() == "auto":
        return AUTO_PARALLEL
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= 64:
        raise ArtifactError(
            f"{PARALLEL_ENV}={raw!r} is invalid: give a number of chats from 1 to 64, or auto"
        )
    return n


def artifact_dir(artifact: str, root: Path | None = None) -> Path:
    root = Path(root or artifacts_dir())
    path = root / artifact
    if not (path / "manifest.json").is_file():
        have = sorted(p.parent.name for p in root.glob("*/manifest.json")) if root.is_dir() else []
        raise ArtifactError(
            f"no artifact {artifact!r} in {root} (found: {', '.join(have) or 'none'}); "
            "build it with `make export` or `balabol export --name NAME`"
        )
    return path


def ranked(speeds: dict[str, float | None], alias: str) -> list[str]:
    """The formats `alias` may take among `speeds` (passed format -> decode tokens/s the
    export measured, None when it has none), best first: measured ones fastest first, then
    unmeasured ones in SPEED_ORDER. The bot's default ranks its choices with it too."""
    family = [f for f in ALIASES[alias] if f in speeds]
    measured = sorted((f for f in family if speeds[f]), key=lambda f: -speeds[f])
    return measured + [f for f in family if not speeds[f]]


def choose(manifest: Manifest, fmt: str) -> Artifact:
    """The manifest entry for a format name or alias (auto, gguf)."""
    if fmt in ALIASES:
        free = available_memory()
        passed = {a.format: a for a in manifest.usable()}
        for f in ranked({f: a.decode_tokens_per_s for f, a in passed.items()}, fmt):
            if passed[f].bytes * 1.3 < free:
                return passed[f]
        raise ArtifactError(
            f"artifact {manifest.name!r} has no passed format for {fmt!r} that fits in "
            f"{free / 2**30:.1f} GiB free memory; formats: "
            + ", ".join(f"{a.format} ({a.status})" for a in manifest.artifacts)
        )
    if fmt not in FORMATS:
        raise ArtifactError(
            f"unknown format {fmt!r}; choose one of: {', '.join([*FORMATS, *ALIASES])}"
        )
    a = manifest.artifact(fmt)
    if a.status == "skipped":
        raise ArtifactError(f"{fmt} was skipped at export: {a.parity.get('skipped')}")
    return a


def check_files(root: Path, a: Artifact) -> None:
    """Cheap size checks, so a truncated file is an error here, not a crash in native code."""
    target = root / a.path
    if not target.exists():
        raise ArtifactError(f"{target} is missing; re-export with `balabol export --force`")
    files = [target] if target.is_file() else [p for p in target.iterdir() if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    if size != a.bytes:
        raise ArtifactError(
            f"{target} has {size} bytes but the manifest says {a.bytes}: the file is truncated "
            "or was changed; re-export with `balabol export --force`"
        )


def open_file(
    path: Path,
    fmt: str,
    *,
    tokenizer,
    context_length: int,
    architecture: str | None = None,
    n_threads: int | None = None,
    **options,
):
    """A backend over one exported file (or directory) of format `fmt`, with no manifest.

    tokenizer: a directory with tokenizer.json (read with runtime.tokenizer), or a tokenizer
    already loaded. architecture: the manifest's name for it, where it has its own decode step
    ("lstm"). options: what a backend's `open` takes besides (torch: adapter=, device=)."""
    if fmt not in BACKENDS:
        raise ArtifactError(f"unknown format {fmt!r}; choose one of: {', '.join(BACKENDS)}")
    if architecture is not None and not (arch := named(architecture)).has_format(fmt):
        raise ArtifactError(
            f"a {arch.name} model has no {fmt} format ({arch.no_format_reason}); "
            f"choose one of: {', '.join(arch.formats or BACKENDS)}"
        )
    if isinstance(tokenizer, (str, Path)):
        from runtime.tokenizer import Tokenizer

        tokenizer = Tokenizer(Path(tokenizer))
    return BACKENDS[fmt].opener(architecture)(
        Path(path),
        tokenizer=tokenizer,
        context_length=context_length,
        fmt=fmt,
        threads=n_threads or cpu_threads(),
        **options,
    )


def load(
    artifact: str = DEFAULT_ARTIFACT,
    fmt: str = "auto",
    *,
    root: Path | None = None,
    verify_sha: bool = False,
    n_threads: int | None = None,
    parallel: int = 1,
):
    """A ready backend for `artifact` in format `fmt` (a format name or auto/gguf).
    `parallel`: how many chats the gguf backend decodes together (its KV slots).
    "remote" is no local file: an OpenAI-compatible server from $BALABOL_REMOTE_URL
    (runtime/remote_backend.py), asked for $BALABOL_REMOTE_MODEL, else `artifact` unless
    it is the default or "remote" (then the server's default model)."""
    if fmt == REMOTE:
        from runtime.remote_backend import RemoteBackend

        named = artifact not in (DEFAULT_ARTIFACT, REMOTE)
        return RemoteBackend.from_env(model=artifact if named else None)
    path = artifact_dir(artifact, root)
    manifest = Manifest.load(path)
    entry = choose(manifest, fmt)
    check_files(path, entry)
    if verify_sha:
        verify(path, entry)
    backend = open_file(
        path / entry.path,
        entry.format,
        tokenizer=path / "hf",
        context_length=serving_context(manifest),
        architecture=manifest.architecture,
        n_threads=n_threads,
        **({"parallel": parallel} if entry.format.startswith("gguf") else {}),
    )
    backend.artifact = manifest.name
    return backend


def serving_context(manifest: Manifest) -> int:
    """The context a served model gets: its own, up to MAX_CONTEXT."""
    return min(manifest.context_length or 2048, MAX_CONTEXT)
