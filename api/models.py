"""The models `balabol serve` offers: every passed (artifact, format) in the manifests under
the artifacts directory, as `artifact/format` ids, plus `artifact` alone (its `auto`
format). Each id a request names is loaded once, on first use, off the event loop, with
its own `runtime.scheduler.Scheduler`, and stays loaded until the server stops.

Example: `curl localhost:8000/v1/models`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from api.protocol import ApiError
from balabol.errors import ArtifactError
from balabol.manifest import Manifest
from balabol.settings import DEFAULT_ARTIFACT
from runtime.loader import ALIASES, SPEED_ORDER
from runtime.scheduler import Scheduler

log = logging.getLogger(__name__)
AUTO = "auto"


@dataclass
class Loaded:
    id: str
    backend: object
    scheduler: Scheduler


class Models:
    def __init__(
        self,
        root: Path,
        *,
        default: str | None = None,
        queue_size: int = 16,
        parallel: int = 1,
        load: Callable | None = None,  # runtime.loader.load; tests wrap it
    ):
        if load is None:
            from runtime.loader import load
        self.root, self.queue_size, self.parallel, self._load = (
            Path(root),
            queue_size,
            parallel,
            load,
        )
        self.formats: dict[str, list[str]] = {}  # artifact -> passed formats, fastest first
        self.created: dict[str, int] = {}
        for path in sorted(self.root.glob("*/manifest.json")):
            try:
                manifest = Manifest.load(path.parent)
            except ArtifactError as e:
                log.warning("skipping %s: %s", path, e)
                continue
            formats = [a.format for a in manifest.usable()]
            if formats:
                order = {f: i for i, f in enumerate(SPEED_ORDER)}
                self.formats[path.parent.name] = sorted(formats, key=lambda f: order.get(f, 99))
                self.created[path.parent.name] = int(path.stat().st_mtime)
        if not self.formats:
            raise ArtifactError(
                f"no artifact with a passed format in {self.root.resolve()}; build one with "
                "`make export` or `balabol export --name NAME`, or pass --out-dir"
            )
        names = sorted(self.formats)
        self.default = default or (DEFAULT_ARTIFACT if DEFAULT_ARTIFACT in names else names[0])
        self.resolve(self.default)  # a --model that is not there fails at start
        self._loaded: dict[tuple[str, str], Loaded] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def ids(self) -> list[tuple[str, int]]:
        """(id, created) of every model: `artifact`, then its `artifact/format`s."""
        out = []
        for name, formats in sorted(self.formats.items()):
            out += [(i, self.created[name]) for i in (name, *(f"{name}/{f}" for f in formats))]
        return out

    def resolve(self, model: str | None) -> tuple[str, str]:
        """(artifact, format) of a model id; None is the default model."""
        artifact, _, fmt = (model or self.default).partition("/")
        fmt = fmt or AUTO
        if artifact in self.formats and (fmt in self.formats[artifact] or fmt in ALIASES):
            return artifact, fmt
        have = ", ".join(i for i, _ in self.ids())
        raise ApiError(
            404,
            f"the model {model!r} does not exist; GET /v1/models lists them: {have}",
            param="model",
            code="model_not_found",
        )

    async def get(self, model: str | None) -> Loaded:
        key = self.resolve(model)
        async with self._locks.setdefault(key, asyncio.Lock()):
            if (loaded := self._loaded.get(key)) is None:
                log.info("loading %s / %s", *key)
                backend = await asyncio.to_thread(
                    self._load, key[0], key[1], root=self.root, parallel=self.parallel
                )
                scheduler = Scheduler(backend, max_queue=self.queue_size, parallel=self.parallel)
                name = key[0] if key[1] == AUTO else "/".join(key)
                loaded = self._loaded[key] = Loaded(name, backend, scheduler)
            return loaded

    def loaded(self) -> list[Loaded]:
        return list(self._loaded.values())

    def close(self) -> None:
        """Cancel what waits, let running replies end, free the models."""
        for m in self._loaded.values():
            m.scheduler.close(wait=False)
            m.backend.close()
        self._loaded.clear()
