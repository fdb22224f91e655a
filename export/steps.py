"""What each export step records, and the manifest made of those records.

Shared by the builders (export/pipeline.py for transformers models, export/lstm.py for the
LSTM), which the pipeline picks per architecture.

Example: `balabol export --base default` writes artifacts/<name>/manifest.json from these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from balabol import __version__, bases
from balabol.manifest import FORMATS, Artifact, Manifest, digest
from balabol.prompt import template_sha256


@dataclass
class Step:
    fmt: str
    status: str
    seconds: float
    parity: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    speed: float | None = None  # decode tokens/s, measured once the file passed its gate


def manifest_of(cfg, name, architecture, steps: dict[str, Step], tmp, tokenizer, ctx) -> Manifest:
    artifacts = []
    for fmt in FORMATS:
        if fmt not in steps:
            continue
        s = steps[fmt]
        quant, rel = FORMATS[fmt]
        path = tmp / rel
        size, sha = digest(path) if path.exists() else (0, "")
        artifacts.append(
            Artifact(
                fmt,
                quant,
                rel,
                size,
                sha,
                s.status,
                s.parity,
                s.details,
                round(s.seconds, 2),
                decode_tokens_per_s=s.speed,
            )
        )
    return Manifest(
        name=name,
        architecture=architecture,
        base=bases.describe(cfg.base),
        adapter=None if cfg.adapter is None else {"path": str(Path(cfg.adapter).resolve())},
        chat_template_sha256=template_sha256(tokenizer.chat_template),
        artifacts=tuple(artifacts),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        balabol_version=__version__,
        context_length=ctx,
    )
