"""ModelManager: which versions are served, loading and hot-swapping them, watching aliases."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import random
from collections.abc import Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any

from core.errors import RegistryError
from core.registry import Registry, split_ref
from service import metrics
from service.batching import MicroBatcher
from service.canary import CanaryGuard, CanaryLimits
from service.errors import NotFound
from service.inference.model import LoadedModel, ModelLoadError
from service.supervise import healthy

log = logging.getLogger("servewatch.models")


def settle_heap() -> None:
    """Collect, then move every live object out of the garbage collector's sight.

    A loaded service holds ~200,000 long-lived tracked objects (scikit-learn, pandas, models);
    each full collection walked them all, a 100 ms pause of the event loop every few seconds
    under load (p99 100 ms, against 7 ms with them frozen). Called once the models are loaded and
    after each hot swap, which first unfreezes so the old version's cycles can be freed.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class ServedRef:
    """What the operator asked for: a version, an alias, or the default (production/newest)."""

    name: str
    ref: str | None  # "3", "@staging" or None

    @classmethod
    def parse(cls, text: str) -> ServedRef:
        return cls(*split_ref(text))

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
        inline_max_s: float = 0.0,
        compiled: bool = True,
    ) -> None:
        self.registry = registry
        self.refs = refs
        self.compiled = compiled
        self.staging: dict[str, Slot] = {}
        self.shadow: set[str] = set()
        self.canary: dict[str, float] = {}
        self.canary_limits = CanaryLimits()
        self.canary_guards: dict[str, CanaryGuard] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.executor = executor
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.inline_max_s = inline_max_s
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
        """Load every requested model; returns the problems (a model that fails is not served).

        Models with a shadow or canary also get their `staging` version; a missing staging
        alias is logged, not a problem (there is nothing to try yet).
        """
        problems = []
        for ref in self.refs:
            try:
                await self.swap(ref)
            except (ModelLoadError, RegistryError) as exc:
                problems.append(str(exc))
                log.error("not serving %s: %s", ref.name, exc)
        await self._load_staging()
        return problems

    async def _load_staging(self) -> None:
        for name in sorted(set(self.shadow) | set(self.canary)):
            if name not in self.slots:
                continue
            try:
                await self.swap(ServedRef(name, "@staging"), role="staging")
            except (OSError, ValueError) as exc:  # aliases.json unreadable for a moment
                log.warning("staging of %s not checked, kept as it is: %s", name, exc)
            except (ModelLoadError, RegistryError) as exc:
                gone = self.staging.pop(name, None)
                if gone is not None:  # the alias was cleared (e.g. a canary rolled back)
                    metrics.STAGING_INFO.labels(name, str(gone.model.version)).set(0)
                    self.spawn(gone.batcher.close())
                    log.warning("staging %s v%s withdrawn: %s", name, gone.model.version, exc)
                else:
                    log.warning("no staging version for %s (%s): no shadow/canary yet", name, exc)

    @staticmethod
    async def _retire(old: Slot) -> None:
        """Let the old version's in-flight calls finish, then free it and re-freeze the heap."""
        await old.batcher.close()
        del old
        settle_heap()

    def personal(self, name: str) -> set[str]:
        """Personal-data columns of any version that may see this model's requests (production
        and staging): every row logged for it is redacted with all of them, whichever answered."""
        columns = set(self.get(name).model.personal)
        staged = self.staging.get(name)
        if staged is not None:
            columns |= staged.model.personal
        return columns

    def route(self, name: str, key: str | None) -> tuple[Slot, bool]:
        """The slot that answers this request and whether it is the canary.

        With a request key the choice is sticky (the same key always lands on the same side).
        """
        prod = self.get(name)
        share = self.canary.get(name)
        cand = self.staging.get(name)
        guard = self.canary_guards.get(name)
        if not share or cand is None or (guard is not None and guard.stopped):
            return prod, False
        if key is None:
            draw = random.random()
        else:
            digest = hashlib.sha256(f"{name}:{key}".encode()).digest()
            draw = int.from_bytes(digest[:8], "big") / 2**64
        return (cand, True) if draw < share else (prod, False)

    def guard(self, name: str) -> CanaryGuard:
        if name not in self.canary_guards:
            self.canary_guards[name] = CanaryGuard(
                name, self.staging[name].model.version, self.canary_limits
            )
        return self.canary_guards[name]

    async def swap(self, ref: ServedRef, role: str = "production") -> tuple[int | None, int]:
        """Load the version `ref` resolves to and swap it in; in-flight requests finish on the old.

        `role` "staging" fills the shadow/canary slot instead of the served one. Returns (old
        version, new version). Raises ModelLoadError and leaves the old one serving.
        """
        table = self.slots if role == "production" else self.staging
        async with self._lock:
            version = self.registry.resolve(ref.name, ref.ref)
            old = table.get(ref.name)
            if old is not None and old.model.version == version:
                return version, version
            try:
                model = await asyncio.to_thread(
                    partial(LoadedModel.load, compiled=self.compiled),
                    self.registry,
                    ref.name,
                    version,
                )
            except ModelLoadError:
                metrics.MODEL_RELOADS.labels(ref.name, "refused").inc()
                raise
            batcher = MicroBatcher(
                model,
                self.executor,
                max_rows=self.max_rows,
                max_wait_s=self.max_wait_s,
                inline_max_s=self.inline_max_s,
            )
            batcher.start()
            table[ref.name] = Slot(ref, model, batcher)
            info = metrics.MODEL_INFO if role == "production" else metrics.STAGING_INFO
            path = [model.serving_path] if role == "production" else []  # model_info's path label
            info.labels(ref.name, str(version), *path).set(1)
            if role == "production":
                _serving_parts(model, 1)
            if role == "staging":
                self.canary_guards.pop(ref.name, None)  # a new canary starts with a clean record
            if old is not None:
                old_path = [old.model.serving_path] if role == "production" else []
                info.labels(ref.name, str(old.model.version), *old_path).set(0)
                if role == "production":
                    _serving_parts(old.model, 0)
                metrics.MODEL_RELOADS.labels(ref.name, "swapped").inc()
                log.info("swapped %s v%s -> v%s", ref.name, old.model.version, version)
                self.spawn(self._retire(old))
            else:
                log.info("serving %s v%s", ref.name, version)
            return (old.model.version if old else None), version

    async def reload(self, name: str) -> tuple[int | None, int]:
        return await self.swap(self.get(name).ref)

    async def watch(self, interval_s: float) -> None:
        """Follow alias changes in the registry: a promote or rollback reaches every replica.
        Run under the supervisor (service/supervise.py): a pass that fails for another reason
        than a refused version is retried, counted, and shown by /readyz while it persists."""
        while True:
            await asyncio.sleep(interval_s)
            for slot in list(self.slots.values()):
                if not slot.ref.follows_alias:
                    continue
                try:
                    await self.swap(slot.ref)
                except (ModelLoadError, RegistryError, OSError, ValueError) as exc:
                    log.error(
                        "reload of %s refused, old version keeps serving: %s", slot.ref.name, exc
                    )
            await self._load_staging()
            healthy()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run work off the request path (shadow predictions); close() waits for it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for slot in [*self.slots.values(), *self.staging.values()]:
            await slot.batcher.close()


def _serving_parts(model: LoadedModel, value: int) -> None:
    """servewatch_model_serving_path: one series per part of the version's model call."""
    for part, plan in model.plan.items():
        metrics.MODEL_SERVING_PATH.labels(
            model.name, str(model.version), part, plan.runs, plan.reason
        ).set(value)
