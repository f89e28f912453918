"""ModelManager: which versions are served, loading and hot-swapping them, watching aliases."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass

from service import metrics
from service.batching import MicroBatcher
from service.errors import NotFound
from service.model import LoadedModel, ModelLoadError
from training.errors import TrainingError
from training.registry import Registry

log = logging.getLogger("servewatch.models")


@dataclass(frozen=True)
class ServedRef:
    """What the operator asked for: a version, an alias, or the default (production/newest)."""

    name: str
    ref: str | None  # "3", "@staging" or None

    @classmethod
    def parse(cls, text: str) -> ServedRef:
        if "@" in text:
            name, alias = text.split("@", 1)
            return cls(name, "@" + alias)
        if ":" in text:
            name, version = text.split(":", 1)
            return cls(name, version)
        return cls(text, None)

    @property
    def follows_alias(self) -> bool:
        return self.ref is None or self.ref.startswith("@")


@dataclass
class Slot:
    ref: ServedRef
    model: LoadedModel
    batcher: MicroBatcher


class ModelManager:
    def __init__(
        self,
        registry: Registry,
        refs: list[ServedRef],
        executor: Executor,
        *,
        max_rows: int,
        max_wait_s: float,
    ) -> None:
        self.registry = registry
        self.refs = refs
        self.executor = executor
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.slots: dict[str, Slot] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def default_refs(cls, registry: Registry, wanted: list[str]) -> list[ServedRef]:
        if wanted:
            return [ServedRef.parse(w) for w in wanted]
        return [ServedRef(name, None) for name in registry.models()]

    def get(self, name: str) -> Slot:
        slot = self.slots.get(name)
        if slot is None:
            have = ", ".join(sorted(self.slots)) or "none"
            raise NotFound(f"no model named {name!r} is served here (models: {have})")
        return slot

    async def load_all(self) -> list[str]:
        """Load every requested model; returns the problems (a model that fails is not served)."""
        problems = []
        for ref in self.refs:
            try:
                await self.swap(ref)
            except (ModelLoadError, TrainingError) as exc:
                problems.append(str(exc))
                log.error("not serving %s: %s", ref.name, exc)
        return problems

    async def swap(self, ref: ServedRef) -> tuple[int | None, int]:
        """Load the version `ref` resolves to and swap it in; in-flight requests finish on the old.

        Returns (old version, new version). Raises ModelLoadError and leaves the old one serving.
        """
        async with self._lock:
            version = self.registry.resolve(ref.name, ref.ref)
            old = self.slots.get(ref.name)
            if old is not None and old.model.version == version:
                return version, version
            try:
                model = await asyncio.to_thread(LoadedModel.load, self.registry, ref.name, version)
            except ModelLoadError:
                metrics.MODEL_RELOADS.labels(ref.name, "refused").inc()
                raise
            batcher = MicroBatcher(
                model, self.executor, max_rows=self.max_rows, max_wait_s=self.max_wait_s
            )
            batcher.start()
            self.slots[ref.name] = Slot(ref, model, batcher)
            metrics.MODEL_INFO.labels(ref.name, str(version)).set(1)
            if old is not None:
                metrics.MODEL_INFO.labels(ref.name, str(old.model.version)).set(0)
                metrics.MODEL_RELOADS.labels(ref.name, "swapped").inc()
                log.info("swapped %s v%s -> v%s", ref.name, old.model.version, version)
                asyncio.get_running_loop().create_task(old.batcher.close())
            else:
                log.info("serving %s v%s", ref.name, version)
            return (old.model.version if old else None), version

    async def reload(self, name: str) -> tuple[int | None, int]:
        return await self.swap(self.get(name).ref)

    async def watch(self, interval_s: float) -> None:
        """Follow alias changes in the registry: a promote or rollback reaches every replica."""
        while True:
            await asyncio.sleep(interval_s)
            for slot in list(self.slots.values()):
                if not slot.ref.follows_alias:
                    continue
                try:
                    await self.swap(slot.ref)
                except (ModelLoadError, TrainingError, OSError, ValueError) as exc:
                    log.error(
                        "reload of %s refused, old version keeps serving: %s", slot.ref.name, exc
                    )

    async def close(self) -> None:
        for slot in self.slots.values():
            await slot.batcher.close()
