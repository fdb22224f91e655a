"""Writing files so a reader never sees half of one, and hashing them.

Everything Balabol writes for another command to read (a manifest, an artifact directory,
an adapter, a data split, an eval table) is written under a temporary name next to its
place and renamed into it when complete: an interrupted command leaves the old file or
nothing, never a truncated one (a rename within a directory is atomic on POSIX).

Example: `balabol export --force` builds the new artifact in `.NAME.partial-*` and swaps it
in with `replacing_dir`; `balabol generate --verify` checks files with `sha256_file`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

CHUNK = 1 << 20  # bytes read at a time when hashing: multi-GB files never sit in memory


def sha256_file(path: Path, chunk: int = CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def open_temp(directory: Path, name: str, mode: str = "w") -> tuple[IO, Path]:
    """A new file `.NAME.*.tmp` in `directory`, opened, and its path. It gets the permissions
    an ordinary new file gets (mkstemp's are 0600), since it will be renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(fd, 0o666 & ~umask)
    text = {"encoding": "utf-8", "newline": "\n"} if "b" not in mode else {}
    return os.fdopen(fd, mode, **text), Path(tmp)


@contextmanager
def replacing(path: Path, mode: str = "w") -> Iterator[IO]:
    """A file to write `path` through: renamed over `path` when the block completes,
    deleted if it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f, tmp = open_temp(path.parent, path.name, mode)
    try:
        with f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    """`path.write_text(text)` (UTF-8), atomically."""
    with replacing(path) as f:
        f.write(text)
    return Path(path)


@contextmanager
def replacing_dir(out: Path) -> Iterator[Path]:
    """An empty directory `.NAME.partial-*` next to `out` to build it in; swapped into place
    when the block completes (an old `out` is kept until then), deleted if it fails."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
