"""`ArchSpec`: what one scratch architecture contributes to `balabol train --arch NAME` (its
defaults, and how its model is built, saved and described); everything else is shared.

    balabol train --arch lstm --data data/jokes --name jokes-lstm   # lstm.SPEC's defaults

A module of its own so the architectures (lstm.py, scratch_gpt.py) and the table of them
(common.ARCHS) import it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ArchSpec:
    """One scratch architecture: its defaults and how to build and save its model."""

    name: str  # the --arch value
    architecture: str  # what the manifest will call it
    defaults: dict[str, Any]  # n_layer, n_embd, n_head, dropout, lr, max_length
    build: Callable  # (cfg, tokenizer) -> torch model whose forward returns .loss
    save: Callable  # (model, directory) -> None
    describe: Callable  # (model) -> one line for the log
