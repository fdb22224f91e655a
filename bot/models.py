"""Which model answers: the artifacts and formats found in the manifests, loaded lazily.

A `Choice` is one (artifact, format) whose file passed its parity gate and whose backend
library is installed. `ModelPool.get` loads it on first use (off the event loop) with its own
`runtime.scheduler.Scheduler`; at most `max_loaded` stay in memory. `reload` re-reads the
manifests and hot-swaps changed files: requests already queued finish on the old model.

With $BALABOL_REMOTE_URL set, an OpenAI-compatible server (runtime/remote_backend.py) is one
more choice, format "remote": the bot runs on the small box and generation where the
hardware is. `BALABOL_FORMAT=remote` makes it the default; with no artifact at all it is the
only choice.

Example: `BALABOL_FORMATS=gguf-q4_k_m,onnx-int8 balabol bot` offers only those two.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from balabol.errors import ArtifactError, BalabolError
from balabol.manifest import Manifest
from balabol.settings import DEFAULT_ARTIFACT
from runtime.loader import ALIASES, BACKENDS, REMOTE, SPEED_ORDER, ranked
from runtime.loader import parallel as resolve_parallel
from runtime.remote_backend import MODEL_ENV, URL_ENV
from runtime.scheduler import Scheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    artifact: str
    format: str
    bytes: int
    sha256: str
    decode_tokens_per_s: float | None = None  # measured at export; the default's ranking

    @property
    def key(self) -> str:
        """Short and stable: fits Telegram's 64-byte callback data whatever the name."""
        return hashlib.sha1(f"{self.artifact}/{self.format}".encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        if self.format == REMOTE:
            return f"{self.artifact} · remote server"
        return f"{self.artifact} · {self.format} · {self.bytes / 2**20:.0f} MB"


@dataclass
class Loaded:
    choice: Choice
    backend: object
    scheduler: Scheduler


@dataclass(frozen=True)
class ReloadReport:
    choices: int
    added: tuple[str, ...]
    removed: tuple[str, ...]
    swapped: tuple[str, ...]


def installed(fmt: str) -> bool:
    """Whether the library a format's backend imports is installed (else it is not offered)."""
    reader = BACKENDS.get(fmt)
    return reader is not None and importlib.util.find_spec(reader.module) is not None


def scan(root: Path, formats: list[str] | None = None) -> list[Choice]:
    """Every passed, installed (artifact, format) under root: by artifact name, then in the
    runtime's fixed SPEED_ORDER (a stable menu; the default is ranked by measured speed)."""
    out = []
    for path in sorted(Path(root).glob("*/manifest.json")):
        try:
            manifest = Manifest.load(path.parent)
        except ArtifactError as e:
            log.warning("skipping %s: %s", path, e)
            continue
        for a in manifest.usable():
            if (not formats or a.format in formats) and installed(a.format):
                out.append(
                    Choice(path.parent.name, a.format, a.bytes, a.sha256, a.decode_tokens_per_s)
                )
    return sorted(out, key=lambda c: (c.artifact, SPEED_ORDER.index(c.format)))


def remote_choice(formats: list[str] | None = None) -> Choice | None:
    """The server at $BALABOL_REMOTE_URL as a choice (named by $BALABOL_REMOTE_MODEL, else
    "remote"), when it is set and BALABOL_FORMATS does not leave "remote" out."""
    if not os.environ.get(URL_ENV, "").strip() or (formats and REMOTE not in formats):
        return None
    return Choice(os.environ.get(MODEL_ENV, "").strip() or REMOTE, REMOTE, 0, "")


class ModelPool:
    def __init__(
        self,
        root: Path,
        *,
        artifact: str | None = None,
        fmt: str = "auto",
        formats: list[str] | None = None,
        queue_size: int = 16,
        max_loaded: int = 2,
        threads: int | None = None,
        parallel: int | str = "auto",  # chats decoded together (runtime.loader.parallel)
        load: Callable | None = None,  # runtime.loader.load; tests wrap it
    ):
        self.root, self.default_artifact, self.default_format = Path(root), artifact, fmt
        self.formats, self.queue_size, self.max_loaded = formats or [], queue_size, max_loaded
        self.threads = threads
        self.parallel = resolve_parallel(parallel)
        if load is None:
            from runtime.loader import load
        self._load = load
        self.choices: list[Choice] = self._scan()
        self._loaded: OrderedDict[tuple[str, str], Loaded] = OrderedDict()  # LRU order
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._retiring: set[threading.Thread] = set()

    # --- choosing --------------------------------------------------------------------------
    def _scan(self) -> list[Choice]:
        remote = remote_choice(self.formats)
        return [*scan(self.root, self.formats), *([remote] if remote else [])]

    def check(self) -> None:
        """Raise a clear error when there is nothing to serve."""
        if not self.choices:
            raise ArtifactError(
                f"no usable model in {self.root.resolve()}: no manifest with a passed format "
                "whose backend is installed; build one with `make export` (or set "
                f"BALABOL_ARTIFACTS to where your artifacts are, or {URL_ENV} to an "
                "OpenAI-compatible server)"
            )
        self.default()

    def default(self) -> Choice:
        local = [c for c in self.choices if c.format != REMOTE]
        remote = self.find(None, REMOTE)
        if remote is not None and (self.default_format == REMOTE or not local):
            return remote
        names = sorted({c.artifact for c in local})
        artifact = self.default_artifact or (
            DEFAULT_ARTIFACT if DEFAULT_ARTIFACT in names else names[0]
        )
        found = self.find(artifact, self.default_format)
        if found is None:
            have = ", ".join(f"{c.artifact}/{c.format}" for c in self.choices)
            raise ArtifactError(
                f"BALABOL_ARTIFACT={artifact} BALABOL_FORMAT={self.default_format} matches "
                f"no usable model; found: {have}"
            )
        return found

    def find(self, artifact: str | None, fmt: str | None) -> Choice | None:
        """The artifact's choice for a format, or for an alias (auto, gguf) the fastest one
        as `--format` picks it (runtime.loader `ranked`: by the speed measured at export).
        There is one remote server: format "remote" finds it whatever the artifact."""
        if fmt == REMOTE:
            return next((c for c in self.choices if c.format == REMOTE), None)
        mine = {c.format: c for c in self.choices if c.artifact == artifact}
        fmt = fmt or "auto"
        if fmt not in ALIASES:
            return mine.get(fmt)
        best = ranked({f: c.decode_tokens_per_s for f, c in mine.items()}, fmt)
        return mine[best[0]] if best else None

    def by_key(self, key: str) -> Choice | None:
        return next((c for c in self.choices if c.key == key), None)

    def resolve(self, artifact: str | None, fmt: str | None) -> Choice:
        """A user's stored choice, or the default when they made none or it is gone."""
        return (artifact and self.find(artifact, fmt)) or self.default()

    # --- loading ---------------------------------------------------------------------------
    async def get(self, choice: Choice) -> Loaded:
        """The loaded model for a choice; loads it (off the event loop) on first use."""
        key = (choice.artifact, choice.format)
        async with self._locks.setdefault(key, asyncio.Lock()):
            if (loaded := self._loaded.get(key)) is not None:
                self._loaded.move_to_end(key)
                return loaded
            log.info("loading %s / %s", *key)
            backend = await asyncio.to_thread(
                self._load,
                choice.artifact,
                choice.format,
                root=self.root,
                n_threads=self.threads,
                parallel=self.parallel,
            )
            scheduler = Scheduler(backend, max_queue=self.queue_size, parallel=self.parallel)
            loaded = Loaded(choice, backend, scheduler)
            self._loaded[key] = loaded
            while len(self._loaded) > self.max_loaded:
                _, old = self._loaded.popitem(last=False)
                self._retire(old)
            return loaded

    def loaded(self) -> list[Loaded]:
        return list(self._loaded.values())

    def waiting(self) -> int:
        """Requests waiting for a model, all models together (the global queue)."""
        return sum(m.scheduler.waiting for m in self._loaded.values())

    def _retire(self, loaded: Loaded) -> None:
        """Stop taking jobs; finish the queued ones in the background, then free memory."""
        log.info("unloading %s / %s", loaded.choice.artifact, loaded.choice.format)

        def close():
            try:
                loaded.scheduler.close(wait=True)
                loaded.backend.close()
            finally:
                self._retiring.discard(threading.current_thread())

        t = threading.Thread(target=close, name="balabol-unload", daemon=True)
        self._retiring.add(t)
        t.start()

    async def reload(self) -> ReloadReport:
        """Re-read the manifests; swap loaded models whose file changed or vanished."""
        old = {(c.artifact, c.format): c for c in self.choices}
        self.choices = await asyncio.to_thread(self._scan)
        new = {(c.artifact, c.format): c for c in self.choices}
        swapped = []
        for key, loaded in list(self._loaded.items()):
            if new.get(key) != loaded.choice:
                del self._loaded[key]
                self._retire(loaded)
                if key in new:
                    swapped.append(key)
                    try:
                        await self.get(new[key])
                    except BalabolError as e:  # the next user of it sees the error
                        log.warning("reloading %s / %s failed: %s", *key, e)
        name = "/".join
        return ReloadReport(
            choices=len(self.choices),
            added=tuple(name(k) for k in new.keys() - old.keys()),
            removed=tuple(name(k) for k in old.keys() - new.keys()),
            swapped=tuple(name(k) for k in swapped),
        )

    async def close(self) -> None:
        for loaded in self._loaded.values():
            self._retire(loaded)
        self._loaded.clear()
        await asyncio.to_thread(lambda: [t.join() for t in list(self._retiring)])
