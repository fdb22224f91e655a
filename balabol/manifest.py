"""The artifact manifest: what `balabol export` built and how well each file matched torch.

`artifacts/<name>/manifest.json` is the only thing the runtime, the bot and the benchmarks
read to discover artifacts. Example: `balabol generate --artifact smollm2-135m-instruct
--format gguf-q4_k_m "Hello"` looks up the q4_k_m entry here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from balabol.errors import ArtifactError
from balabol.files import sha256_file, write_text

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

# format -> (quantization, path inside the artifact directory)
FORMATS: dict[str, tuple[str, str]] = {
    "torch": ("fp32", "hf"),
    "onnx": ("fp32", "onnx"),
    "onnx-int8": ("int8-blockwise", "onnx-int8"),
    "gguf-f16": ("f16", "gguf/model-f16.gguf"),
    "gguf-q8_0": ("q8_0", "gguf/model-q8_0.gguf"),
    "gguf-q4_k_m": ("q4_k_m", "gguf/model-q4_k_m.gguf"),
    "gguf-q4_0": ("q4_0", "gguf/model-q4_0.gguf"),
}
STATUSES = ("passed", "failed", "skipped")


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ArtifactError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    return fmt


@dataclass(frozen=True)
class Artifact:
    format: str
    quantization: str
    path: str  # relative to the artifact directory; a file (gguf) or a directory
    bytes: int
    sha256: str
    status: str  # passed | failed | skipped
    parity: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    # greedy decode speed measured at export on the exporting machine (export/parity.py
    # `decode_speed`); `--format auto` takes the fastest passed file by it. None: not measured
    # (a failed file, or an export older than the measurement)
    decode_tokens_per_s: float | None = None

    def __post_init__(self):
        check_format(self.format)
        if self.status not in STATUSES:
            raise ArtifactError(f"artifact status {self.status!r} is not one of {STATUSES}")


@dataclass(frozen=True)
class Manifest:
    name: str
    architecture: str
    base: dict[str, Any]
    adapter: dict[str, Any] | None
    chat_template_sha256: str
    artifacts: tuple[Artifact, ...]
    created_at: str
    balabol_version: str
    schema_version: int = SCHEMA_VERSION
    context_length: int = 0

    def artifact(self, fmt: str) -> Artifact:
        check_format(fmt)
        for a in self.artifacts:
            if a.format == fmt:
                return a
        have = ", ".join(a.format for a in self.artifacts) or "none"
        raise ArtifactError(
            f"artifact {self.name!r} has no {fmt!r} file (it has: {have}); "
            f"re-run `balabol export --name {self.name} --force` to rebuild it"
        )

    def usable(self) -> list[Artifact]:
        """Artifacts that passed (or skipped nothing) their parity gate."""
        return [a for a in self.artifacts if a.status == "passed"]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False) + "\n"

    def save(self, directory: Path) -> Path:
        return write_text(Path(directory) / MANIFEST_NAME, self.to_json())

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise ArtifactError(
                f"no {MANIFEST_NAME} in {directory}; build it with "
                f"`balabol export --name {Path(directory).name}`"
            )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("schema_version") != SCHEMA_VERSION:
                raise ArtifactError(
                    f"{path} has schema version {raw.get('schema_version')}, this Balabol "
                    f"reads {SCHEMA_VERSION}; re-export with `balabol export --force`"
                )
            raw["artifacts"] = tuple(Artifact(**a) for a in raw["artifacts"])
            return cls(**raw)
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise ArtifactError(
                f"{path} is not a valid manifest ({e}); re-export with `balabol export --force`"
            ) from e


def _files(path: Path) -> Iterable[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def digest(path: Path) -> tuple[int, str]:
    """(bytes, sha256) of a file, or of a directory as sorted `relpath sha256` lines."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size, sha256_file(path)
    h, size = hashlib.sha256(), 0
    for f in _files(path):
        size += f.stat().st_size
        h.update(f"{f.relative_to(path).as_posix()} {sha256_file(f)}\n".encode())
    return size, h.hexdigest()


def verify(directory: Path, artifact: Artifact) -> None:
    """Raise ArtifactError when the artifact's files no longer match the manifest."""
    target = Path(directory) / artifact.path
    if not target.exists():
        raise ArtifactError(f"{target} is missing; re-export with `balabol export --force`")
    size, sha = digest(target)
    if (size, sha) != (artifact.bytes, artifact.sha256):
        raise ArtifactError(
            f"{target} does not match the manifest (bytes {size} vs {artifact.bytes}, "
            f"sha256 {sha[:12]}… vs {artifact.sha256[:12]}…): the file was changed or "
            "truncated; re-export with `balabol export --force`"
        )
