"""Seed baselines trained from scratch on data/NAME (issue #7): `balabol train --arch ...`.

    balabol train --arch gpt-scratch --data data/jokes --name jokes-gpt   # -> models/jokes-gpt/
    balabol train --arch lstm --data data/jokes --name jokes-lstm         # -> models/jokes-lstm/
    balabol export --base models/jokes-gpt    # ONNX, int8, GGUF, like any HF directory
    balabol export --base models/jokes-lstm   # ONNX with explicit (h, c) state

Both train their own byte-level BPE tokenizer on the train split (common.py), then share
LoRA training's data encoding, schedule, HF Trainer, progress, eval, best-checkpoint and
resume machinery (training/lora.py); each module holds only what differs.
"""

from __future__ import annotations

from training import lora
from training.baselines import common, lstm, scratch_gpt
from training.baselines.common import ArchSpec, ScratchConfig

# --arch -> what differs; "lora" (the default) is training/lora.py itself
ARCHS: dict[str, ArchSpec] = {spec.name: spec for spec in (scratch_gpt.SPEC, lstm.SPEC)}


def run(cfg: ScratchConfig, **kwargs) -> lora.TrainResult:
    """Train cfg.arch from scratch (kwargs: log, callbacks, progress as lora.run)."""
    return common.run(ARCHS[cfg.arch], cfg, **kwargs)


__all__ = ["ARCHS", "ArchSpec", "ScratchConfig", "run"]
