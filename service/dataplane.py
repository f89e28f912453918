"""DataPlane: predict, explain and feedback, whichever protocol asked.

Canary routing, validation against the version's schema, micro-batched model calls, shadow calls,
ids, the prediction log and the request metrics live here. A protocol (service/protocols/) decodes
its request into instances (one dict per row) and renders the `Answer` it gets back, as MLServer's
`DataPlane.infer` takes a decoded request. A request's version is chosen after its body arrived.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any

from fastapi.concurrency import run_in_threadpool

from core import labels
from core.rows import FeedbackRow, PredictionRow
from predlog.ids import MAX_FUTURE_S, IdKeys, issued_at, normalise
from predlog.logwriter import LogFull, LogWriter
from predlog.store import PredictionStore, encode, prediction_rows
from service import metrics
from service.config import Settings
from service.errors import (
    MAX_PROBLEMS,
    InvalidInstances,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from service.inference.model import LoadedModel, Outputs, redact
from service.models import ModelManager, Slot
from service.validation import Checked

log = logging.getLogger("servewatch.predict")

KEY_RELOAD_S = 10.0
"""Least time between two reads of the log's id keys (an id no known key tagged may be another
process's, made while the store was away and added since)."""

Instances = list[dict[str, Any]]
"""A request's rows as decoded by its protocol: feature name -> value, one dict per row."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What a predict or explain request gets back, for its protocol to render: the model that
    answered, its outputs and the rows' prediction ids (and, explaining, each row's extras)."""

    name: str
    model: LoadedModel
    outputs: Outputs
    ids: list[str]
    extras: list[dict[str, Any]] | None = None

    @property
    def version(self) -> int:
        return self.model.version


def count_invalid(name: str, known: set[str], problems: Iterable[tuple[str, str]]) -> None:
    """The validation-error metric for refused rows, whichever protocol found the problems
    (feature, rule): a name the model does not know (a client chooses it) counts under one label
    value, `_unknown`; a problem of a whole row under `_instance`."""
    for feature, rule in problems:
        if rule == "unknown" or (feature and feature not in known):
            feature = "_unknown"
        metrics.VALIDATION_ERRORS.labels(name, feature or "_instance", rule).inc()


class Call:
    """One request through the data plane, as a context manager that counts it and observes its
    latency by model, version and endpoint on the way out (and feeds the canary guard)."""

    __slots__ = ("endpoint", "name", "version", "canary", "started", "_plane")

    def __init__(self, plane: DataPlane, endpoint: str, name: str) -> None:
        self._plane = plane
        self.endpoint = endpoint
        self.name = name
        self.version = ""  # the answering version, once chosen
        self.canary: bool | None = None  # None: no canary configured for this model
        self.started = 0.0

    def __enter__(self) -> Call:
        self.started = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        status = int(getattr(exc, "status_code", 500)) if isinstance(exc, Exception) else 200
        self._plane.record(self, status, time.perf_counter() - self.started)


class DataPlane:
    """What every predict, explain and feedback request goes through."""

    def __init__(
        self,
        manager: ModelManager,
        writer: LogWriter,
        store: PredictionStore,
        settings: Settings,
    ) -> None:
        self.manager = manager
        self.writer = writer
        self.store = store
        self.settings = settings
        self.max_body_bytes = settings.max_body_bytes
        self._sync = settings.log_durability == "sync"
        # explanations get threads of their own: a long one never holds the model thread
        self.explain_pool = ThreadPoolExecutor(settings.explain_threads, "explain")
        self._explains = 0  # explain requests computing or waiting for a thread
        self._shadows = 0  # shadow calls running or queued
        self._keys_read_at = -1e9
        self._pending_key: str | None = None
        if settings.id_key is not None:
            self.ids = IdKeys(settings.id_key, settings.id_previous_keys)
        else:  # until the log's keys are read (`read_keys`), a key of this process's own
            self._pending_key = secrets.token_hex(32)
            self.ids = IdKeys(self._pending_key)

    def read_keys(self) -> bool:
        """Take the id keys kept in the log (SERVEWATCH_ID_KEY unset), adding this process's own
        key if it tagged ids with it while the store was away; False when the keys are
        configured or were read less than `KEY_RELOAD_S` ago. Raises when the store is away."""
        now = time.monotonic()
        if self.settings.id_key is not None or now - self._keys_read_at < KEY_RELOAD_S:
            return False
        keys = self.store.id_secrets(self._pending_key)
        self._keys_read_at = now
        self._pending_key = None
        self.ids = IdKeys(keys[0], keys[1:])
        return True

    async def keep_keys(self, every_s: float = 5.0) -> None:
        """Background: read the log's id keys until it answers once (a process that started
        while the store was away tags with its own key; other processes must learn it)."""
        while self._pending_key is not None:
            try:
                await run_in_threadpool(self.read_keys)
            except Exception as exc:  # the store is still away: the next try
                log.debug("id keys not read: %s", exc)
            if self._pending_key is not None:
                await asyncio.sleep(every_s)

    def close(self) -> None:
        self.explain_pool.shutdown(wait=True, cancel_futures=True)

    def call(self, endpoint: str, name: str) -> Call:
        return Call(self, endpoint, name)

    def record(self, call: Call, status: int, elapsed: float) -> None:
        manager, name = self.manager, call.name
        known = name if name in manager.slots else "_unknown"
        metrics.child(metrics.REQUESTS, known, call.version, call.endpoint, str(status)).inc()
        metrics.child(metrics.REQUEST_SECONDS, known, call.version, call.endpoint).observe(elapsed)
        # only requests that were routed (call.canary set) are compared: a request refused
        # before routing (bad body, unknown field) would tilt production's side
        if call.canary is not None and name in manager.canary and name in manager.staging:
            manager.guard(name).record(is_canary=bool(call.canary), status=status, seconds=elapsed)

    def production(self, call: Call) -> Slot:
        """The production slot of the call's model (404 when there is none), its version
        recorded on the call: what a request's errors count against until a version answers."""
        slot = self.manager.get(call.name)
        call.version = str(slot.model.version)
        return slot

    async def predict(
        self,
        call: Call,
        instances: Instances,
        request_key: str | None,
        *,
        version: int | None = None,
    ) -> Answer:
        """Answer the decoded `instances` (canary and shadow as configured). A `version` must be
        production's: it answers, never the canary."""
        name, manager = call.name, self.manager
        prod = manager.get(name)
        if version is not None and version != prod.model.version:
            raise NotFound(
                f"version {version} of {name!r} is not served here (serving {prod.model.version})"
            )
        call.version = str(prod.model.version)
        # Clients speak the production schema; a canary answers only what it can read from it.
        instances, checked = self.check(prod, name, instances)
        slot = prod
        # the request key matters only when a canary is configured
        if name in manager.canary and version is None:
            slot, call.canary = manager.route(name, request_key)
            if slot is not prod:
                projected = slot.model.validator.check(project(instances, slot))
                if isinstance(projected, list):
                    slot, call.canary = prod, False
                else:
                    checked = projected
        call.version = str(slot.model.version)
        out = await slot.batcher.predict(checked.columns, len(instances))
        ids = self.ids.new(len(instances), name)
        answer = await self.answer(call, slot.model, instances, out, ids)
        shadow = manager.staging.get(name) if name in manager.shadow else None
        if shadow is not None:
            if self._shadows >= self.settings.shadow_max_inflight:  # bounded: dropped, counted
                staged = str(shadow.model.version)
                metrics.SHADOW_PREDICTIONS.labels(name, staged, "dropped").inc(len(instances))
            else:
                self._shadows += 1
                manager.spawn(self.shadow_predict(name, shadow, instances, ids))
        return answer

    def explain_limit(self, given: int) -> None:
        """At most `explain_max_instances` rows to explain (422 beyond)."""
        limit = self.settings.explain_max_instances
        if given > limit:
            raise InvalidInstances(
                f"{given} instances to explain; the limit is {limit} "
                "(SERVEWATCH_EXPLAIN_MAX_INSTANCES)",
                [
                    problem(
                        "instances",
                        "explain_max_instances",
                        f"at most {limit} instances per explain request",
                    )
                ],
            )

    async def explain(self, call: Call, instances: Instances) -> Answer:
        """Predictions with each input feature's contribution (`explain_limit` rows at most),
        computed on the explain threads (a 503 when four requests per thread already wait),
        never on the model thread or the event loop."""
        slot = self.production(call)
        self.explain_limit(len(instances))
        instances, checked = self.check(slot, call.name, instances)
        model = slot.model
        if self._explains >= 4 * self.settings.explain_threads:
            raise Unavailable("explanations are busy; retry later")
        self._explains += 1
        try:
            out = await slot.batcher.predict(checked.columns, len(instances))
            loop = asyncio.get_running_loop()
            explanations = await loop.run_in_executor(
                self.explain_pool, model.explain_columns, checked.columns
            )
        finally:
            self._explains -= 1
        extras = [{"explanation": e} for e in explanations]
        ids = self.ids.new(len(instances), call.name)
        return await self.answer(call, model, instances, out, ids, extras)

    def check(self, slot: Slot, name: str, instances: Instances) -> tuple[Instances, Checked]:
        """The instances, checked against the version's schema (422 naming each problem)."""
        if not instances:
            raise InvalidInstances(
                "instances is empty", [problem("instances", "min_items", "at least one instance")]
            )
        if len(instances) > self.settings.max_instances:
            raise PayloadTooLarge(
                f"{len(instances)} instances; the limit is {self.settings.max_instances}"
            )
        checked = slot.model.validator.check(instances)
        if isinstance(checked, list):
            count_invalid(name, slot.model.validator.known, ((p.feature, p.rule) for p in checked))
            raise InvalidInstances(
                f"{len(checked)} problem(s) in the instances",
                [p.as_dict() for p in checked[:MAX_PROBLEMS]],
            )
        for feat, n in checked.out_of_range.items():  # features of the schema: a bounded set
            metrics.child(metrics.OUT_OF_RANGE, name, feat).inc(n)
        for feat, n in checked.unseen.items():
            metrics.child(metrics.UNSEEN_CATEGORIES, name, feat).inc(n)
        if checked.coerced:  # logged (and monitored) as the model read them: 1.0 -> "1"
            cols = checked.columns
            instances = [
                {**inst, **{n: col[i] for n, col in cols.items()}}
                for i, inst in enumerate(instances)
            ]
        return instances, checked

    def log_rows(
        self,
        name: str,
        model: LoadedModel,
        instances: list[dict[str, Any]],
        out: Outputs,
        ids: list[str],
        *,
        latency_ms: float,
        shadow: bool = False,
    ) -> list[PredictionRow]:
        """Prediction-log rows, redacted with every personal column of production and staging;
        a shadow row gets its own id and points at the answered one."""
        personal = self.manager.personal(name)
        key = self.settings.personal_data_key
        return prediction_rows(
            ids=self.ids.new(len(ids), name) if shadow else ids,
            model=name,
            version=model.version,
            created_at=time.time(),
            inputs=[redact(inst, personal, key) for inst in instances] if personal else instances,
            predictions=out.predictions,
            probabilities=out.probabilities,
            latency_ms=latency_ms,
            shadow=shadow,
            ref_ids=ids if shadow else None,
        )

    async def answer(
        self,
        call: Call,
        model: LoadedModel,
        instances: list[dict[str, Any]],
        out: Outputs,
        ids: list[str],
        extras: list[dict[str, Any]] | None = None,
    ) -> Answer:
        """Queue each prediction's log row, count it; the answer for the protocol to render."""
        name = call.name
        latency_ms = (time.perf_counter() - call.started) * 1000
        rows = self.log_rows(name, model, instances, out, ids, latency_ms=latency_ms)
        try:
            # answered only once the row is on its way to the log (or, in sync mode, in it)
            await self.writer.put(rows, durable=self._sync)
        except LogFull as exc:
            raise Unavailable(str(exc)) from None
        version = str(model.version)
        if out.probabilities is not None and len(out.predictions) == 1:  # no Counter for one
            metrics.child(metrics.PREDICTIONS, name, version, labels.key(out.predictions[0])).inc()
        elif out.probabilities is not None:
            # counted in C; one model's classes are of one type, so no two of them are equal
            for cls, n in Counter(out.predictions).items():
                metrics.child(metrics.PREDICTIONS, name, version, labels.key(cls)).inc(n)
        else:
            metrics.PREDICTIONS.labels(name, version, "").inc(len(instances))
            hist = metrics.PREDICTION_VALUES.labels(name, version)
            for v in out.predictions:
                hist.observe(v)
        return Answer(name, model, out, ids, extras)

    async def shadow_predict(
        self, name: str, slot: Slot, instances: list[dict[str, Any]], parent_ids: list[str]
    ) -> None:
        """The staging version on the same inputs, off the request path; logged, never returned
        (one of at most `shadow_max_inflight` at once: the caller counted it in)."""
        try:
            await self._shadow(name, slot, instances, parent_ids)
        finally:
            self._shadows -= 1

    async def _shadow(
        self, name: str, slot: Slot, instances: list[dict[str, Any]], parent_ids: list[str]
    ) -> None:
        version = str(slot.model.version)
        try:
            shadow_checked = slot.model.validator.check(project(instances, slot))
            if isinstance(shadow_checked, list):
                metrics.SHADOW_PREDICTIONS.labels(name, version, "schema_mismatch").inc(
                    len(instances)
                )
                return
            out = await slot.batcher.predict(shadow_checked.columns, len(instances))
            rows = self.log_rows(
                name, slot.model, instances, out, parent_ids, latency_ms=0.0, shadow=True
            )
            await self.writer.put(rows)
        except Exception as exc:  # a failing shadow never touches production traffic
            metrics.SHADOW_PREDICTIONS.labels(name, version, "failed").inc(len(instances))
            log.warning("shadow prediction of %s v%s failed: %s", name, version, exc)
            return
        metrics.SHADOW_PREDICTIONS.labels(name, version, "logged").inc(len(instances))

    async def feedback(self, name: str, items: list[tuple[str, Any]]) -> tuple[int, list[str]]:
        """Store ground-truth labels (prediction id, label as sent) for earlier predictions, as
        decoded by the protocol; labels are checked against the production version's label type
        and classes, ids against the rules of `id_problems`. A 422 names the refused items;
        nothing is stored then. The labels stored (an id given twice: once) and the ids given."""
        given = feedback_labels(items, self.manager.get(name).model)
        ids = [pid for pid, _ in given]
        try:  # up to 10,000 tags to check, and maybe the log to ask: off the event loop
            problems = await run_in_threadpool(self.id_problems, name, ids)
        except Exception:
            metrics.FEEDBACK.labels(name, "store_down").inc(len(ids))
            raise Unavailable("the prediction log store is unreachable; retry later") from None
        if problems:
            metrics.FEEDBACK.labels(name, "refused").inc(len(ids))
            raise InvalidRequest(
                f"{len(problems)} prediction id(s) refused", problems[:MAX_PROBLEMS]
            )
        now = time.time()
        rows = [  # an id given twice: its last label (one upsert cannot touch a row twice)
            FeedbackRow(prediction_id=pid, model=name, label=encode(label), received_at=now)
            for pid, label in dict(given).items()
        ]
        try:
            await run_in_threadpool(partial(self.store.write_labels, rows, db_clock=True))
        except Exception:
            metrics.FEEDBACK.labels(name, "store_down").inc(len(ids))
            raise Unavailable("the prediction log store is unreachable; retry later") from None
        metrics.FEEDBACK.labels(name, "stored").inc(len(rows))
        return len(rows), ids

    def id_problems(self, name: str, ids: list[str]) -> list[dict[str, Any]]:
        """A problem per id feedback may not label: not shaped like ours (`id_format`), dated
        ahead of this clock (`id_future`), older than the log's retention (`id_expired`), or
        not issued by this service for `name` (`id_not_issued`): neither tagged for `name`
        under a current or previous key, nor (an id from before tags) in the log for `name`."""
        now = time.time()
        days = self.settings.log_retention_days
        oldest = now - days * 86_400 if days else None
        problems: list[dict[str, Any]] = []
        untagged: list[tuple[int, str]] = []
        for i, pid in enumerate(ids):
            field, issued = f"labels.{i}.prediction_id", issued_at(pid)
            if issued is None:
                problems.append(_id_problem(field, "id_format", "not a prediction id of ours"))
            elif issued > now + MAX_FUTURE_S:
                problems.append(_id_problem(field, "id_future", "dated ahead of the clock"))
            elif oldest is not None and issued < oldest:
                problems.append(
                    _id_problem(field, "id_expired", f"older than the log's retention ({days} d)")
                )
            elif not self.ids.issued(pid, name):
                untagged.append((i, pid))
        if untagged and not problems:
            found = self._untagged_known(name, [p for _, p in untagged])
            problems = [
                _id_problem(
                    f"labels.{i}.prediction_id",
                    "id_not_issued",
                    f"no prediction of {name!r} was issued under this id",
                )
                for i, pid in untagged
                if pid not in found
            ]
        return problems

    def _untagged_known(self, name: str, ids: list[str]) -> set[str]:
        """Of ids no known key tagged for `name`: those tagged under a key the log has gained
        since it was read, and those the log holds a prediction of `name` under."""
        if self.read_keys():
            ids = [pid for pid in ids if not self.ids.issued(pid, name)]
        return self.store.existing_ids(name, ids) if ids else set()


def _id_problem(field: str, rule: str, message: str) -> dict[str, Any]:
    return {"field": field, "rule": rule, "message": message}


def problem(feature: str, rule: str, message: str) -> dict[str, Any]:
    """An error detail about the request as a whole (no one instance)."""
    return {"instance": None, "feature": feature, "rule": rule, "message": message}


def project(instances: list[dict[str, Any]], slot: Slot) -> list[dict[str, Any]]:
    """The instances restricted to what `slot`'s version reads (its features, personal data)."""
    known = slot.model.validator.known
    return [{k: v for k, v in inst.items() if k in known} for inst in instances]


def feedback_labels(items: list[tuple[str, Any]], model: LoadedModel) -> list[tuple[str, Any]]:
    """(prediction id, label in the model's type) per item, or one 422 naming every bad item and
    the rule it breaks."""
    out, problems = [], []
    for i, (prediction_id, given) in enumerate(items):
        try:
            label = labels.coerce(given, model.label_type, model.answers or None)
        except ValueError as exc:
            rule, _, message = str(exc).partition(": ")
            problems.append({"field": f"labels.{i}.label", "rule": rule, "message": message})
            continue
        out.append((normalise(prediction_id), label))
    if problems:
        raise InvalidRequest(f"{len(problems)} label(s) rejected", problems[:MAX_PROBLEMS])
    return out
