"""Seed baselines trained from scratch on data/NAME (issue #7): `balabol train --arch ...`.

    balabol train --arch gpt-scratch --data data/jokes --name jokes-gpt   # -> models/jokes-gpt/
    balabol train --arch lstm --data data/jokes --name jokes-lstm         # -> models/jokes-lstm/
    balabol export --base models/jokes-gpt    # ONNX, int8, GGUF, like any HF directory
    balabol export --base models/jokes-lstm   # ONNX with explicit (h, c) state

Both train their own byte-level BPE tokenizer on the train split (common.py), then run the
harness LoRA runs too (training/harness.py: data encoding, schedule, HF Trainer, progress,
eval, best checkpoint, resume, atomic write); each architecture module (scratch_gpt.py,
lstm.py) holds only what differs, as an `ArchSpec` (spec.py) in `common.ARCHS`.
"""

from __future__ import annotations

from training.baselines import common
from training.baselines.common import ARCHS, ScratchConfig
from training.baselines.spec import ArchSpec
from training.harness import TrainResult


def run(cfg: ScratchConfig, **kwargs) -> TrainResult:
    """Train cfg.arch from scratch (kwargs: log, callbacks, progress as lora.run)."""
    return common.run(ARCHS[cfg.arch], cfg, **kwargs)


__all__ = ["ARCHS", "ArchSpec", "ScratchConfig", "run"]
