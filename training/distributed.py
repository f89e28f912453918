"""A search spread over worker processes and pods: Optuna's RDB storage on PostgreSQL, one study."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from core.registry import Registry
from training.candidates import Choice, Space
from training.config import TrainConfig
from training.errors import TrainingError
from training.prepare import Prepared, Progress, prepare, quiet
from training.publishing import Promote
from training.search import (
    FamilyResult,
    FoldReport,
    Scoring,
    Trial,
    TrialCallback,
    _proposals,
    bayes_study,
    evaluate_trial,
    pruning_report,
    suggest,
)
from training.selection import search
from training.train import TrainResult, run_training

STORAGE_ENV = "SERVEWATCH_STUDY_STORAGE"
"""The study's PostgreSQL URL; SERVEWATCH_DATABASE_URL (the prediction log's) when unset."""
HEARTBEAT_ENV = "SERVEWATCH_STUDY_HEARTBEAT_SECONDS"
HEARTBEAT_SECONDS = 10
"""A running trial's worker writes a heartbeat this often; one silent for GRACE_BEATS heartbeats
is dead: its trial is marked failed and put back in the queue (RetryHeartbeatStaleTrialCallback)."""
GRACE_BEATS = 3
RETRIES = 3
"""A trial whose worker died is redone at most this many times."""
POLL_SECONDS = 0.5
"""How often the finishing worker looks at the trials others are still running."""
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")

Mode = Literal["work", "wait", "read"]
"""work: draw trials while any is left; wait: also wait for the trials others are running (and
redo those whose worker died); read: draw none, only read the study's results."""


@dataclass(frozen=True)
class StudySpec:
    """Which study, in which storage, and how often a worker proves it is alive."""

    name: str
    url: str
    heartbeat_seconds: int = HEARTBEAT_SECONDS

    @classmethod
    def resolve(cls, name: str, url: str | None = None, heartbeat: int | None = None) -> StudySpec:
        """The study `name` in `url`, else $SERVEWATCH_STUDY_STORAGE, else
        $SERVEWATCH_DATABASE_URL, which must be PostgreSQL. Raises TrainingError."""
        if not NAME_RULE.fullmatch(name):
            raise TrainingError(
                f"--study {name!r}: letters, digits, '_', '.' and '-', at most 100 characters, "
                "starting with a letter or digit"
            )
        url = url or os.environ.get(STORAGE_ENV) or os.environ.get("SERVEWATCH_DATABASE_URL")
        if not url or not url.startswith(("postgresql://", "postgres://")):
            raise TrainingError(
                f"--study needs a PostgreSQL storage: --study-storage or {STORAGE_ENV} (else "
                f"SERVEWATCH_DATABASE_URL) must be postgresql://..., got {url or 'nothing'}"
            )
        beat = heartbeat or int(os.environ.get(HEARTBEAT_ENV) or HEARTBEAT_SECONDS)
        if beat < 1:
            raise TrainingError(f"{HEARTBEAT_ENV}: a whole number of seconds >= 1, got {beat}")
        return cls(name, url, beat)

    @property
    def sqlalchemy_url(self) -> str:
        """The URL with psycopg 3 as its driver."""
        return "postgresql+psycopg://" + self.url.split("://", 1)[1]


class Stray(Exception):
    """A trial a worker created in a queue that another worker had just emptied: dropped."""


class SharedSearch:
    """The search's studies in one RDB storage: `family` is search_family's twin, drawing the
    trials from the shared study; `finish` runs the final steps exactly once."""

    def __init__(self, spec: StudySpec, worker: int = 0, mode: Mode = "work") -> None:
        import optuna  # heavy: only a distributed search needs it
        import sqlalchemy as sa

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # heartbeats and their retry callback are "experimental" in Optuna since 2.8; used as is
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self.spec, self.worker, self.mode = spec, worker, mode
        self.engine = sa.create_engine(spec.sqlalchemy_url, pool_size=1, max_overflow=2)
        self.storage = optuna.storages.RDBStorage(
            spec.sqlalchemy_url,
            heartbeat_interval=spec.heartbeat_seconds,
            grace_period=spec.heartbeat_seconds * GRACE_BEATS,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=RETRIES
            ),
        )

    @contextmanager
    def _locked(self, key: str, session: bool = False) -> Iterator[None]:
        """A PostgreSQL advisory lock on `key` in this study's schema: for one transaction, or
        (session) until the block ends, even when it runs for minutes."""
        import sqlalchemy as sa

        args = {"k": f"servewatch-study:{self.spec.name}:{key}"}
        lock = "hashtext(current_schema() || :k)"
        if not session:
            with self.engine.begin() as conn:
                conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({lock})"), args)
                yield
            return
        with self.engine.connect() as conn:
            conn.execute(sa.text(f"SELECT pg_advisory_lock({lock})"), args)
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text(f"SELECT pg_advisory_unlock({lock})"), args)
                conn.commit()

    def _study(self, name: str) -> Any:
        import optuna

        return optuna.create_study(
            storage=self.storage, study_name=name, direction="maximize", load_if_exists=True
        )

    def register(self, config: TrainConfig) -> None:
        """Create the study, or check that it was made for the same config. Raises
        TrainingError when another config made it."""
        signature = _digest(config.model_dump_json())
        with self._locked("register"):
            root = self._study(self.spec.name)
            seen = root.user_attrs.get("config")
            if seen is None:
                root.set_user_attr("config", signature)
            elif seen != signature:
                raise TrainingError(
                    f"study {self.spec.name} was made by another training config: every worker "
                    "runs the same config on the same data; give a new search a new --study"
                )

    def family(
        self,
        family: str,
        space: Space,
        build: Callable[[dict[str, Any]], Pipeline],
        x: pd.DataFrame,
        y: pd.Series,
        *,
        method: str,
        trials: int,
        deadline: float,
        cv: Any,
        scoring: Scoring,
        seed: int,
        fit_params: dict[str, Any] | None = None,
        on_trial: TrialCallback | None = None,
        default: dict[str, Any] | None = None,
        halving: bool = False,
    ) -> FamilyResult:
        """search_family on the shared study: the default and the grid or random proposals are
        queued once (the same list every worker computes), Bayesian trials come from TPE on
        every worker's results; pruning reads every worker's fold scores."""
        import optuna

        if halving and method in ("random", "grid") and space:
            raise TrainingError(halving_refused())
        fixed = [default] if default is not None else []
        bayes = method == "bayes" and bool(space)
        if not bayes:
            fixed += _proposals(method, space, trials, seed)[: max(0, trials - len(fixed))]
        data = pd.util.hash_pandas_object(pd.concat([x, y], axis=1), index=True)
        signature = _digest(repr(fixed) + str(scoring) + data.to_numpy().tobytes().hex())
        queued = self._queue(f"{self.spec.name}/{family}/fixed", len(fixed), signature)
        tpe = None
        if bayes:  # worker 0 draws what the single-process search would; others differ
            sampler_seed = seed if self.worker == 0 else seed + 7919 * self.worker
            tpe = bayes_study(sampler_seed, self.storage, f"{self.spec.name}/{family}/bayes")
        done = 0

        def run(trial: Any, params: dict[str, Any], report: FoldReport | None) -> float:
            nonlocal done
            t = evaluate_trial(build, params, x, y, cv, scoring, fit_params, report)
            trial.set_user_attr(
                "result", {"score": t.score, "std": t.std, "seconds": t.seconds, "rows": t.rows}
            )
            done += 1
            if on_trial:
                on_trial(family, done, t.score)
            if t.pruned:
                raise optuna.TrialPruned()
            return t.score if np.isfinite(t.score) else -1e12

        def fixed_objective(trial: Any) -> float:
            if "proposal" not in trial.user_attrs:  # a race lost: recorded as a failed stray
                trial.set_user_attr("stray", True)
                raise Stray()
            return run(trial, fixed[int(trial.user_attrs["proposal"])], None)

        def started() -> bool:
            return any(_closed(s) for s in (queued, tpe) if s is not None)

        self._drain(queued, fixed_objective, None, deadline, started)
        if tpe is not None:
            self._drain(
                tpe,
                lambda trial: run(trial, suggest(trial, space), pruning_report(trial)),
                trials - len(fixed),
                deadline,
                started,
            )
        result = FamilyResult(family)
        result.trials += _results(queued, lambda t: fixed[int(t.user_attrs["proposal"])])
        if tpe is not None:
            result.trials += _results(tpe, lambda t: _decode(space, t.params))
        return result

    def _queue(self, name: str, size: int, signature: str) -> Any:
        """Study `name` holding `size` queued trials (proposal 0..size-1), queued once whatever
        the number of workers creating it at once. Raises TrainingError when a worker computed
        other proposals (another config, other data)."""
        with self._locked(f"queue:{name}"):
            study = self._study(name)
            seen = study.user_attrs.get("signature")
            if seen is None:
                for i in range(size):
                    study.enqueue_trial({}, user_attrs={"proposal": i})
                study.set_user_attr("signature", signature)
            elif seen != signature:
                raise TrainingError(
                    f"study {name}: this worker's proposals or search rows differ from the "
                    "study's (another config, seed or data): every worker must train the same "
                    "config on the same data"
                )
        return study

    def _drain(
        self,
        study: Any,
        objective: Callable[[Any], float],
        target: int | None,
        deadline: float,
        started: Callable[[], bool],
    ) -> None:
        """Run the study's trials while any is left: the queued ones, then (target) new ones
        until `target` are taken; after `deadline` none (once the family has a score). In wait
        mode, also wait for the trials others run, redoing those whose worker died."""
        import optuna
        from optuna.trial import TrialState as S

        if self.mode == "read":
            return
        while True:
            states = Counter(t.state for t in study.get_trials(deepcopy=False))
            taken = states[S.COMPLETE] + states[S.PRUNED] + states[S.RUNNING] + states[S.WAITING]
            left = states[S.WAITING] > 0 or (target is not None and taken < target)
            if left and not (time.monotonic() >= deadline and started()):
                # optimize first fails the trials of dead workers and queues them again
                study.optimize(objective, n_trials=1, catch=(Stray,))
            elif self.mode == "wait" and states[S.RUNNING]:
                optuna.storages.fail_stale_trials(study)
                time.sleep(POLL_SECONDS)
            else:
                return

    def finish(self, run: Callable[[], TrainResult], say: Progress = quiet) -> TrainResult:
        """`run` (fit the winner, assess, publish, promote) exactly once for this study: under
        a PostgreSQL advisory lock, and not again once the study records its result (a second
        finisher, a retried pod, a rerun get the recorded result)."""
        with self._locked("finish", session=True):
            root = self._study(self.spec.name)
            seen = root.user_attrs.get("finished")
            if seen is not None:
                say(f"study {self.spec.name} was finished: {seen['name']} v{seen['version']}")
                return TrainResult(
                    seen["name"], seen["version"], seen["manifest"], seen["promoted_to"]
                )
            result = run()
            manifest = json.loads(json.dumps(result.manifest, default=str))
            root.set_user_attr(
                "finished",
                {
                    "name": result.name,
                    "version": result.version,
                    "manifest": manifest,
                    "promoted_to": result.promoted_to,
                    "worker": self.worker,
                },
            )
            return result

    def close(self) -> None:
        self.engine.dispose()
        self.storage.remove_session()


def _closed(study: Any) -> bool:
    from optuna.trial import TrialState as S

    return bool(study.get_trials(deepcopy=False, states=(S.COMPLETE, S.PRUNED)))


def _results(study: Any, params: Callable[[Any], dict[str, Any]]) -> list[Trial]:
    """The study's finished trials (in the order they were queued or drawn) as search Trials."""
    from optuna.trial import TrialState as S

    out = []
    for t in sorted(study.get_trials(states=(S.COMPLETE, S.PRUNED)), key=lambda t: t.number):
        r = t.user_attrs.get("result")
        if r is not None:
            pruned = t.state == S.PRUNED
            out.append(Trial(params(t), r["score"], r["std"], r["seconds"], r["rows"], pruned))
    return out


def _decode(space: Space, raw: dict[str, Any]) -> dict[str, Any]:
    """An Optuna trial's params as the search's (a choice was suggested as its index)."""
    return {
        name: dim.values[raw[name]] if isinstance(dim, Choice) else raw[name]
        for name, dim in space.items()
    }


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def halving_refused() -> str:
    return (
        "search.halving cannot be spread over workers (each rung waits for the one before); "
        "set search.halving false, or search without --study"
    )


def work(
    config: TrainConfig, spec: StudySpec, worker: int, mode: Mode, say: Progress
) -> tuple[Prepared, float]:
    """Prepare and draw trials from the study until none is left (no re-scoring on more rows:
    the finishing step does that); the prepared data and the search's deadline."""
    shared = SharedSearch(spec, worker, mode)
    try:
        shared.register(config)
        prepared = prepare(config, say)
        deadline = time.monotonic() + config.search.budget_seconds
        search(prepared, say, shared.family, grow_rows=False, deadline=deadline)
        return prepared, deadline
    finally:
        shared.close()


def _extra_worker(config: TrainConfig, spec: StudySpec, worker: int) -> None:
    """A local worker process (`--workers N`): draws trials, never finishes."""
    try:
        work(config, spec, worker, "work", quiet)
    except TrainingError as exc:
        sys.exit(f"worker {worker}: {exc}")


def train(
    config: TrainConfig,
    registry: Registry,
    spec: StudySpec,
    *,
    workers: int = 1,
    index: int = 0,
    progress: Progress | None = None,
    promote: Promote = "auto",
) -> TrainResult | None:
    """One worker of a distributed search (`index`, a Kubernetes Indexed Job's completion
    index) with `workers - 1` more local worker processes. Worker 0 then waits for the trials
    others are running, and fits, assesses, publishes and promotes the winner once for the
    study; other workers return None. Raises TrainingError."""
    if config.search.halving:
        raise TrainingError(halving_refused())
    if workers < 1 or index < 0:
        raise TrainingError(f"--workers must be >= 1, --worker-index >= 0: {workers}, {index}")
    say = progress or quiet
    ctx = multiprocessing.get_context("spawn")
    extras = [
        ctx.Process(target=_extra_worker, args=(config, spec, index * workers + k))
        for k in range(1, workers)
    ]
    for p in extras:
        p.start()
    try:
        mode: Mode = "wait" if index == 0 else "work"
        prepared, deadline = work(config, spec, index * workers, mode, say)
        for p in extras:
            p.join()
            if p.exitcode:  # its running trial, if any, was redone by a worker still alive
                say(f"a local worker ended with exit code {p.exitcode}")
        if index != 0:
            return None
        shared = SharedSearch(spec, 0, "read")
        try:
            return shared.finish(
                lambda: run_training(
                    config,
                    registry,
                    progress=say,
                    promote=promote,
                    select=partial(search, family_search=shared.family, deadline=deadline),
                    prepared=prepared,
                ),
                say,
            )
        finally:
            shared.close()
    finally:
        for p in extras:
            if p.is_alive():
                p.terminate()  # only on an error: each ends by itself once the queue is empty
            p.join()
