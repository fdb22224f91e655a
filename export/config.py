"""`ExportConfig`: what `balabol export` builds, checked on construction. The command's flags
are its fields (help: each field's docstring; export/cli.py).

    balabol export --base default --adapter adapters/me --formats onnx gguf-q8_0

Light on purpose (stdlib and `balabol/` only): `balabol export --help` reads these fields, and
export/pipeline.py, which runs the export, imports numpy and the exporters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from balabol import bases
from balabol.errors import ExportError
from balabol.manifest import FORMATS
from balabol.settings import artifacts_dir

# gguf-q4_0 decodes ~1.4x faster than q4_k_m on SmolLM2-135M but misses the shared 4-bit bar
# there (held-out perplexity x1.189 of fp32 against x1.10): exported when asked for
# (`--formats ... gguf-q4_0`), not by default, so `make export` stays green; a model it
# suits passes the gate and `auto` then serves it by its measured speed.
OPT_IN_FORMATS = ("gguf-q4_0",)
DEFAULT_FORMATS = tuple(f for f in FORMATS if f not in OPT_IN_FORMATS)


@dataclass(frozen=True)
class ExportConfig:
    base: str = "default"
    """base model: 'default' (embedded SmolLM2-135M-Instruct) or an HF model directory"""
    adapter: Path | None = None
    """LoRA adapter directory to merge (from `balabol train`)"""
    name: str | None = None
    """artifact name (default: the base's or the adapter's name)"""
    out_dir: Path = field(default_factory=artifacts_dir)
    """where artifacts go (default: ./artifacts or $BALABOL_ARTIFACTS)"""
    formats: tuple[str, ...] = DEFAULT_FORMATS
    """only these formats (default: all but gguf-q4_0, which is asked for by name)"""
    force: bool = False
    """replace an existing artifact of the same name"""
    # format -> export/parity.py's Gate; None: its DEFAULT_GATES. Typed and defaulted loosely
    # because parity imports numpy, and reading this class (as --help does) must not.
    gates: dict[str, Any] | None = None

    def __post_init__(self):
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise ExportError(f"unknown formats {unknown}; known: {', '.join(FORMATS)}")
        if "torch" not in self.formats:
            object.__setattr__(self, "formats", ("torch", *self.formats))
        if self.gates is None:
            from export.parity import DEFAULT_GATES

            object.__setattr__(self, "gates", dict(DEFAULT_GATES))

    @property
    def artifact_name(self) -> str:
        if self.name:
            return self.name
        if self.adapter is not None:
            return Path(self.adapter).resolve().name
        name = bases.ALIASES.get(self.base, self.base)
        return name if name in bases.EMBEDDED else Path(self.base).resolve().name
