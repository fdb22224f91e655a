"""Where Balabol keeps things (every path can be moved with an environment variable), and
what share of the machine it may use.

Example: `BALABOL_ARTIFACTS=/srv/models balabol export` writes /srv/models/<name>/.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_ARTIFACT = "smollm2-135m-instruct"


def cache_dir() -> Path:
    """Imported base checkpoints (BALABOL_CACHE, default ~/.cache/balabol)."""
    env = os.environ.get("BALABOL_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "balabol"


def artifacts_dir() -> Path:
    """Exported artifacts (BALABOL_ARTIFACTS, default ./artifacts)."""
    return Path(os.environ.get("BALABOL_ARTIFACTS", "artifacts"))


def adapters_dir() -> Path:
    return Path(os.environ.get("BALABOL_ADAPTERS", "adapters"))


def data_dir() -> Path:
    return Path(os.environ.get("BALABOL_DATA", "data"))


def models_dir() -> Path:
    """Models trained from scratch, `balabol train --arch gpt-scratch|lstm` (BALABOL_MODELS)."""
    return Path(os.environ.get("BALABOL_MODELS", "models"))


def cpu_threads() -> int:
    """The CPU cores this process may run on (a container's or taskset's share, not the
    machine's): the default thread count of every backend."""
    if hasattr(os, "sched_getaffinity"):  # Linux
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def available_memory() -> int:
    """MemAvailable from /proc/meminfo in bytes (a large number where it is unknown, so
    nothing is refused for lack of memory on a system without /proc)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62
