"""Quiet library output: a noisy step prints nothing; what it said is kept, not lost.

`with quiet() as said: ...` captures, for the duration of the block:
- Python warnings (DeprecationWarning, torch's TracerWarning, ...);
- `logging` records of the libraries in LIBRARIES (each has its own stderr handler);
- the process's file descriptors 1 and 2: C code (llama.cpp's quantizer, onnxruntime)
  writes there directly, past `sys.stdout`, and so do Python prints inside the block.

When the block raises, the captured text is written to stderr first, so a failure still
shows what the library said. Under `verbosity(True)` (`balabol export --verbose`) nothing
is captured: library output passes through as it happens.

Example: `balabol export --verbose` shows every line optimum, onnxruntime and llama.cpp print.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

# the loggers of the libraries an export runs (children, e.g. "transformers.modeling_utils",
# reach them by propagation)
LIBRARIES = (
    "transformers",
    "optimum",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "torch",
    "peft",
    "huggingface_hub",
    "hf-to-gguf",
    "gguf",
)

_verbose: ContextVar[bool] = ContextVar("balabol_verbose", default=False)


@contextlib.contextmanager
def verbosity(verbose: bool) -> Iterator[None]:
    """Let library output through (True) or keep it quiet (False) inside the block."""
    token = _verbose.set(verbose)
    try:
        yield
    finally:
        _verbose.reset(token)


def is_verbose() -> bool:
    return _verbose.get()


@dataclass
class Captured:
    """What a quiet block caught; `text` is everything, in the order it was seen per source."""

    output: str = ""  # fd 1 and 2
    logs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(filter(None, [self.output.rstrip("\n"), *self.logs, *self.warnings]))


@contextlib.contextmanager
def quiet(libraries: tuple[str, ...] = LIBRARIES) -> Iterator[Captured]:
    """Capture warnings, the libraries' logging and fds 1/2 (a no-op when verbose)."""
    said = Captured()
    if is_verbose():
        yield said
        return
    failed = False
    try:
        with _warnings(said.warnings), _logs(libraries, said.logs), _fds(said):
            yield said
    except BaseException:
        failed = True
        raise
    finally:
        if failed and said.text:
            print(said.text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _warnings(into: list[str]) -> Iterator[None]:
    # The filters are left alone (what would have been shown is kept) and so is their
    # list: catch_warnings swaps it for a copy, which CPython's C side can keep using
    # after the block and so print ResourceWarnings at exit.
    def keep(message, category, filename, lineno, file=None, line=None):
        into.append(f"{category.__name__}: {message} ({filename}:{lineno})")

    shown, warnings.showwarning = warnings.showwarning, keep
    try:
        yield
    finally:
        warnings.showwarning = shown


@contextlib.contextmanager
def _logs(names: tuple[str, ...], into: list[str]) -> Iterator[None]:
    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            into.append(f"{record.levelname} {record.name}: {record.getMessage()}")

    keep = Keep()
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers[:] = [keep]
        logger.propagate = False
    try:
        yield
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers[:] = handlers
            logger.propagate = propagate


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):  # C stdio buffers (printf from native code)
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def _fds(said: Captured) -> Iterator[None]:
    try:
        fds = [sys.__stdout__.fileno(), sys.__stderr__.fileno()]
    except (AttributeError, ValueError, io.UnsupportedOperation):  # no real fds (embedded)
        yield
        return
    _flush()
    with (
        tempfile.TemporaryFile() as sink,
        # Python-level writers too: sys.stdout may not be fd 1 (pytest, a notebook)
        open(sink.fileno(), "w", buffering=1, encoding="utf-8", closefd=False) as py,
    ):
        saved = [os.dup(fd) for fd in fds]
        try:
            for fd in fds:
                os.dup2(sink.fileno(), fd)
            with contextlib.redirect_stdout(py), contextlib.redirect_stderr(py):
                yield
        finally:
            py.flush()
            _flush()
            for fd, copy in zip(fds, saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            said.output = sink.read().decode("utf-8", errors="replace")
