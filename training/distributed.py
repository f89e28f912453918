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
from typing import Any, Literal

import numpy as np
import pandas as pd

from core.errors import ServewatchError
from core.registry import Registry
from training.candidates import Choice, Space
from training.config import TrainConfig
from training.errors import TrainingError
from training.prepare import Prepared, Progress, prepare, quiet, sample_pinned, search_rows
from training.publishing import Promote
from training.search import (
    FamilyResult,
    FamilySearch,
    FoldReport,
    Pruned,
    Trial,
    create_study,
    evaluate_trial,
    run_family,
    suggest,
)
from training.selection import Selection, search
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


class Stray(ServewatchError):
    """A trial a worker created for a configuration (or TPE slot) that another worker claimed
    first: marked `stray`, failed, and counted nowhere."""


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
        # Optuna creates its tables on first use: two workers creating them at once collide
        with self.engine.begin() as conn:
            lock = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || :k))"
            conn.execute(sa.text(lock), {"k": "servewatch-study-tables"})
            self.storage = self._storage(spec)

    @staticmethod
    def _storage(spec: StudySpec) -> Any:
        """Optuna's RDB storage with heartbeats, in the cache that keeps this process's running
        trials (one for every study of the search, so each is read incrementally)."""
        import optuna

        from training.studystore import OwnTrialsStorage

        return OwnTrialsStorage(
            optuna.storages.RDBStorage(
                spec.sqlalchemy_url,
                heartbeat_interval=spec.heartbeat_seconds,
                grace_period=spec.heartbeat_seconds * GRACE_BEATS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=RETRIES
                ),
            )
        )

    @contextmanager
    def _locked(self, key: str, session: bool = False) -> Iterator[Any]:
        """A PostgreSQL advisory lock on `key` in this study's schema: for one transaction (the
        block gets its connection, inside that transaction), or (session) until the block ends,
        even when it runs for minutes."""
        import sqlalchemy as sa

        args = {"k": f"servewatch-study:{self.spec.name}:{key}"}
        lock = "hashtext(current_schema() || :k)"
        if not session:
            with self.engine.begin() as conn:
                conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({lock})"), args)
                yield conn
            return
        with self.engine.connect() as conn:
            conn.execute(sa.text(f"SELECT pg_advisory_lock({lock})"), args)
            conn.commit()
            try:
                yield conn
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
        self._sign(
            self._study(self.spec.name),
            "config",
            _digest(config.model_dump_json()),
            f"study {self.spec.name} was made by another training config: every worker runs the "
            "same config on the same data; give a new search a new --study",
        )

    def family(self, *args: Any, **kwargs: Any) -> SharedFamilySearch:
        """FamilySearch's twin for selection.search (`family_search`): the same arguments, its
        trials drawn from this study."""
        return SharedFamilySearch(self, *args, **kwargs)

    def search_family(
        self, *args: Any, trials: int, deadline: float, **options: Any
    ) -> FamilyResult:
        """search.search_family's twin: up to `trials` trials of one family drawn from the study
        until `deadline`; in wait mode, then none running anywhere."""
        fs = self.family(*args, cap=trials, **options)
        run_family(fs, deadline)
        if self.mode == "wait":
            fs.settle()
        return fs.result

    def sign(self, study: Any, signature: str) -> None:
        """Record what a family study was made from, or check it. Raises TrainingError when a
        worker computed other proposals or search rows (another config, seed or data)."""
        self._sign(
            study,
            "signature",
            signature,
            f"study {study.study_name}: this worker's proposals or search rows differ from the "
            "study's (another config, seed or data): every worker must train the same config on "
            "the same data",
        )

    def _sign(self, study: Any, key: str, value: str, refusal: str) -> None:
        with self._locked(f"sign:{study.study_name}"):
            seen = study.user_attrs.get(key)
            if seen is None:
                study.set_user_attr(key, value)
            elif seen != value:
                raise TrainingError(refusal)

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
        self.storage._backend.remove_session()


class SharedFamilySearch(FamilySearch):
    """One family's search on the shared study, a trial at a time like FamilySearch: study
    `NAME/<family>/fixed` holds the untuned default and the grid or random proposals (the same
    sequence on every worker, so the same as one process), each trial claiming the next one not
    yet claimed (`_claim`: exactly once per configuration, whatever the workers racing);
    `NAME/<family>/bayes` the TPE trials, sampled from every worker's results, each claiming a
    slot under the cap. A trial whose worker died is redone with its claim. `result` holds every
    worker's trials."""

    def __init__(self, shared: SharedSearch, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shared = shared
        family, space = self.result.family, self.space
        self._bayes = self.method == "bayes" and bool(space)
        self._sequence: list[dict[str, Any]] = []
        if self._default is not None:
            self._sequence.append(self._default)
        elif not space:
            self._sequence.append({})  # nothing to search: the estimator as it is, once
        self._more = bool(space) and not self._bayes  # grid/random: proposals follow
        self._running_ids: set[int] = set()
        self._orphans = Orphans(shared.spec.heartbeat_seconds * GRACE_BEATS)
        name = shared.spec.name
        self.fixed = shared._study(f"{name}/{family}/fixed")
        data = pd.util.hash_pandas_object(pd.concat([self.x, self.y], axis=1), index=True)
        first = [self._at(i) for i in range(16)]
        shared.sign(
            self.fixed, _digest(repr(first) + str(self.scoring) + data.to_numpy().tobytes().hex())
        )
        from training.studystore import FixedTrials

        self._fixed = FixedTrials(self.fixed._study_id, ("proposal", "stray", "result"))
        self.tpe = None
        if self._bayes:  # worker 0 draws what one process would; the others are seeded apart
            seed = self.seed if shared.worker == 0 else self.seed + 7919 * shared.worker
            self.tpe = create_study(seed, shared.storage, f"{name}/{family}/bayes")
        self._sync()

    def _at(self, index: int) -> dict[str, Any] | None:
        """The index-th configuration of the fixed sequence; None past a grid's end."""
        while self._more and len(self._sequence) <= index:
            params = next(self._proposals, None)
            if params is None:
                self._more = False
            else:
                self._sequence.append(params)
        return self._sequence[index] if index < len(self._sequence) else None

    def _sync(self) -> None:
        """Read the family's trials once (every worker's): their states, and `result`: the
        finished ones, the fixed sequence's first. The fixed study in one statement (its
        trials' states and the attributes read here), the TPE study through Optuna's cache
        (which its sampler reads too)."""
        from optuna.trial import TrialState as S

        with self.shared.engine.connect() as conn:
            fixed = self._fixed.read(conn)
        tpe = self.tpe.get_trials(deepcopy=False) if self.tpe is not None else []
        self._tpe_trials = tpe
        self._claimed = len(_claims(fixed, "proposal"))
        self._counts = Counter(
            (t.state, study is tpe)
            for study in (fixed, tpe)
            for t in study
            if not t.user_attrs.get("stray")
        )
        result = FamilyResult(self.result.family)
        result.trials += _results(fixed, lambda t: self._at(int(t.user_attrs["proposal"])))
        result.trials += _results(tpe, lambda t: _decode(self.space, t.params))
        self.result = result
        self._running = sum(n for (state, _), n in self._counts.items() if state == S.RUNNING)
        self._running_ids = {t._trial_id for s in (fixed, tpe) for t in s if t.state == S.RUNNING}

    def _left(self) -> Any:
        """The study to draw the next trial from (None: none left), as last read."""
        from optuna.trial import TrialState as S

        counts = self._counts
        alive = (S.COMPLETE, S.PRUNED, S.RUNNING, S.WAITING)
        taken = sum(n for (state, _), n in counts.items() if state in alive)
        waiting = counts[(S.WAITING, False)], counts[(S.WAITING, True)]
        if self.cap is not None and taken >= self.cap and not any(waiting):
            return None
        if waiting[0] or self._at(self._claimed) is not None:
            return self.fixed
        return self.tpe

    @property
    def done(self) -> bool:
        """No trial left to draw; for the finishing worker, none running elsewhere either; in
        read mode, always."""
        if self.shared.mode == "read":
            return True
        return self._left() is None and not (self.shared.mode == "wait" and self._running)

    def step(self) -> None:
        """Run the next trial of the shared study, or (finishing worker) wait for the trials
        others run, failing and queueing again those whose worker died."""
        if self.shared.mode == "read":
            return
        study = self._left()
        if study is None:
            if self.shared.mode == "wait" and self._running:
                self._fail_stale()
                time.sleep(POLL_SECONDS)
        else:  # optimize first fails the trials of dead workers and queues them again
            objective = self._fixed_objective if study is self.fixed else self._tpe_objective
            study.optimize(objective, n_trials=1, catch=(Stray,))
        self._sync()

    def settle(self) -> None:
        """Wait until no trial of this family runs anywhere (a dead worker's is failed)."""
        self._sync()
        while self._running:
            self._fail_stale()
            time.sleep(POLL_SECONDS)
            self._sync()

    def _fail_stale(self) -> None:
        """Fail, and queue again, the trials whose worker died (Optuna's heartbeat check), once
        an orphan (a trial without a heartbeat: see `Orphans`) has been given one."""
        import optuna

        with self.shared.engine.connect() as conn:
            for trial_id in self._orphans.due(self._running_ids, conn):
                self.shared.storage.record_heartbeat(trial_id)
        for study in (self.fixed, self.tpe):
            if study is not None:
                optuna.storages.fail_stale_trials(study)

    def _claim(self, trial: Any, key: str) -> int | None:
        """Claim for `trial` the next `key` of its family not yet claimed (`proposal`: the index
        in the fixed sequence; `slot`: a TPE trial's place under the cap), compare-and-set under
        the family's advisory lock: the claims are read from the storage itself (not Optuna's
        per-process cache) and this one written before the lock is released, so no two trials
        ever hold one claim. None, and the trial is marked stray, when none is left."""
        with self.shared._locked(f"claim:{self.shared.spec.name}/{self.result.family}") as conn:
            tpe = None if self.tpe is None else self.tpe._study_id
            taken = claims_taken(conn, self.fixed._study_id, tpe)
            mine = len(taken["proposal"] if key == "proposal" else taken["slot"])
            left = self.cap is None or sum(map(len, taken.values())) < self.cap
            if left and (key == "slot" or self._at(mine) is not None):
                trial.set_user_attr(key, mine)
                return mine
        trial.set_user_attr("stray", True)
        return None

    def _fixed_objective(self, trial: Any) -> float:
        index = trial.user_attrs.get("proposal")  # a dead worker's trial redone: its claim
        if index is None:
            index = self._claim(trial, "proposal")
        params = None if index is None else self._at(int(index))
        if params is None:  # claimed by another worker first (the cap, a grid's end)
            raise Stray()
        default = index == 0 and self._default is not None
        return self._run(trial, params, None, default)

    def _tpe_objective(self, trial: Any) -> float:
        if "slot" not in trial.user_attrs and self._claim(trial, "slot") is None:
            raise Stray()
        return self._run(trial, suggest(trial, self.space), self._pruning(trial), False)

    def _pruning(self, trial: Any) -> FoldReport:
        """pruning_report's twin on the shared study: each fold's mean is reported to the study
        (where other workers' pruners compare with it once the trial completes) and judged by
        the study's pruner against the family's TPE trials completed as last read (`_sync`,
        just before this trial), instead of `trial.should_prune()`, which reads the study from
        the storage again at every fold (six statements, and every unfinished trial built).
        With one worker that is the same judgement; with several, a trial another worker
        completes meanwhile counts from the next trial on."""
        from optuna.trial import TrialState

        assert self.tpe is not None
        done = [t for t in self._tpe_trials if t.state == TrialState.COMPLETE]
        study = Completed(self.tpe.direction, done)
        reported: dict[int, float] = {}

        def report(fold: int, mean: float) -> None:
            trial.report(mean, fold)
            reported[fold] = float(mean)
            judged = Reported(fold, dict(reported))
            if self.tpe is not None and self.tpe.pruner.prune(study, judged):
                raise Pruned(mean)

        return report

    def _run(
        self, trial: Any, params: dict[str, Any], report: FoldReport | None, default: bool
    ) -> float:
        import optuna

        t = evaluate_trial(
            self.build, params, self.x, self.y, self.cv, self.scoring, self.fit_params, report
        )
        trial.set_user_attr(
            "result",
            {"score": t.score, "std": t.std, "seconds": t.seconds, "rows": t.rows,
             "folds": list(t.folds), "default": default, "fit_seconds": t.fit_seconds,
             "score_seconds": t.score_seconds, "fit_rows": t.fit_rows,
             "scored_rows": t.scored_rows},
        )  # fmt: skip
        if self.on_trial:
            self.on_trial(self.result.family, len(self.result.trials) + 1, t.score)
        if t.pruned:
            raise optuna.TrialPruned()
        return t.score if np.isfinite(t.score) else -1e12


@dataclass(frozen=True)
class Completed:
    """What an Optuna pruner reads of a study: its direction and its completed trials."""

    direction: Any
    trials: list[Any]

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[Any]:
        return [t for t in self.trials if states is None or t.state in states]


@dataclass(frozen=True)
class Reported:
    """What an Optuna pruner reads of the trial it judges: its fold means so far."""

    last_step: int
    intermediate_values: dict[int, float]


class Orphans:
    """Running trials that have no heartbeat after the grace period: their worker died between
    creating the trial and its heartbeat thread's first beat (a kill at that moment, seen under
    load). Optuna's stale check passes over a trial without a heartbeat, so a finishing worker
    would wait on it forever; given one heartbeat, it turns stale one grace period later and is
    failed and redone like any other dead worker's trial."""

    def __init__(self, grace_seconds: float) -> None:
        self.grace = grace_seconds
        self.first_seen: dict[int, float] = {}
        self.given: set[int] = set()

    def due(self, running: set[int], conn: Any) -> list[int]:
        """Of the `running` trial ids, those seen running for longer than the grace period with
        no heartbeat row (read on `conn` only when some are that old), each returned once."""
        import sqlalchemy as sa

        now = time.monotonic()
        self.first_seen = {t: self.first_seen.get(t, now) for t in running}  # ended: forgotten
        old = sorted(t for t in running if now - self.first_seen[t] > self.grace)
        old = [t for t in old if t not in self.given]
        if not old:
            return []
        query = sa.text("SELECT trial_id FROM trial_heartbeats WHERE trial_id IN :ids")
        beating = {
            r[0]
            for r in conn.execute(
                query.bindparams(sa.bindparam("ids", expanding=True)), {"ids": old}
            )
        }
        self.given.update(old)
        return [t for t in old if t not in beating]


def claims_taken(conn: Any, fixed: int, tpe: int | None) -> dict[str, set[int]]:
    """The claims the family's trials hold, read on `conn` (inside the claim's lock): the
    fixed study's `proposal`s and the TPE study's `slot`s (a retry holds its original's).

    One query on Optuna's own tables (`trials`, `trial_user_attributes`: its RDB schema since
    Optuna 2) instead of the storage's `get_all_trials`, which builds every trial of both studies
    with its parameters, values and attributes (six statements, and CPU growing with the
    trials) for each trial claimed."""
    import sqlalchemy as sa

    rows = conn.execute(
        sa.text(
            "SELECT a.key, a.value_json FROM trial_user_attributes a"
            " JOIN trials t ON t.trial_id = a.trial_id"
            " WHERE (t.study_id = :fixed AND a.key = 'proposal')"
            " OR (t.study_id = :tpe AND a.key = 'slot')"
        ),
        {"fixed": fixed, "tpe": -1 if tpe is None else tpe},
    )
    taken: dict[str, set[int]] = {"proposal": set(), "slot": set()}
    for key, value in rows:
        taken[key].add(int(json.loads(value)))
    return taken


def _claims(trials: list[Any], key: str) -> set[int]:
    """The `key` claims (proposal or slot) the trials hold: 0, 1, ... (a retry holds its
    original's)."""
    return {int(t.user_attrs[key]) for t in trials if key in t.user_attrs}


def _claim_of(trial: Any) -> int:
    """A trial's claim (its proposal or TPE slot), else its number."""
    attrs = trial.user_attrs
    return int(attrs.get("proposal", attrs.get("slot", trial.number)))


def _results(trials: list[Any], params: Callable[[Any], dict[str, Any] | None]) -> list[Trial]:
    """The finished ones of a study's trials as search Trials, in the order of their claims (a
    fixed study's: the one process's order, a redone trial in its place)."""
    from optuna.trial import TrialState as S

    finished = [t for t in trials if t.state in (S.COMPLETE, S.PRUNED)]
    out = []
    for t in sorted(finished, key=lambda t: (_claim_of(t), t.number)):
        r, p = t.user_attrs.get("result"), params(t)
        if r is not None and p is not None:
            out.append(
                Trial(p, r["score"], r["std"], r["seconds"], r["rows"], t.state == S.PRUNED,
                      tuple(r["folds"]), r["default"], r.get("fit_seconds", 0.0),
                      r.get("score_seconds", 0.0), r.get("fit_rows", 0), r.get("scored_rows", 0))
            )  # fmt: skip
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
) -> tuple[Prepared, bool, float]:
    """Prepare the search's rows (a source's sample drawn in it, else every row) and draw
    trials from the study until none is left (no re-scoring on more rows: the finishing step
    does that; in wait mode, until no trial runs anywhere); the search's rows, whether they are
    a sample (the final fit then reads every row), and the run's start (the budget's)."""
    shared = SharedSearch(spec, worker, mode)
    try:
        shared.register(config)
        started = time.monotonic()
        sample = search_rows(config, say)
        prepared = prepare(config, say) if sample is None else sample
        families: list[SharedFamilySearch] = []

        def family(*args: Any, **kwargs: Any) -> SharedFamilySearch:
            families.append(shared.family(*args, **kwargs))
            return families[-1]

        search(prepared, say, started, family_search=family, grow_rows=False)
        if mode == "wait":
            for f in families:
                f.settle()
        return prepared, sample is not None, started
    finally:
        shared.close()


def worker_threads(workers: int, cpus: int | None = None) -> int:
    """Native threads (OpenMP, BLAS) each of `workers` local workers may use: the machine's
    cores shared out, at least one. Unlimited, every worker's HistGradientBoosting or LightGBM
    starts a thread per core and the spinning threads of N workers on the same cores cost several
    times the work (bench/distributed_search.py: 2 workers at 0.16x of one on 2 cores)."""
    cores = cpus if cpus is not None else len(os.sched_getaffinity(0))
    return max(1, cores // max(1, workers))


@contextmanager
def shared_cores(workers: int) -> Iterator[None]:
    """This process's native thread pools limited to its share of the cores while `workers`
    local workers search (a pod of a Kubernetes Job is limited by its OMP_NUM_THREADS)."""
    from threadpoolctl import threadpool_limits

    if workers <= 1:
        yield
        return
    with threadpool_limits(worker_threads(workers)):
        yield


def _extra_worker(config: TrainConfig, spec: StudySpec, worker: int, workers: int) -> None:
    """A local worker process (`--workers N`): draws trials, never finishes."""
    try:
        with shared_cores(workers):
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
        ctx.Process(target=_extra_worker, args=(config, spec, index * workers + k, workers))
        for k in range(1, workers)
    ]
    for p in extras:
        p.start()
    try:
        mode: Mode = "wait" if index == 0 else "work"
        with shared_cores(workers):  # the final fit, after the search, has every core
            rows, sampled, started = work(config, spec, index * workers, mode, say)
        for p in extras:
            p.join()
            if p.exitcode:  # its running trial, if any, was redone by a worker still alive
                say(f"a local worker ended with exit code {p.exitcode}")
        if index != 0:
            return None
        shared = SharedSearch(spec, 0, "read")

        def select(every: Prepared, say: Progress, started: float) -> Selection:
            """The study's trials, read on the rows the workers searched; a sample that
            prepare did not pin (not found among the rows read): a search here, on every row."""
            if sampled and not sample_pinned(every):
                return search(every, say, started)
            return search(rows, say, started, family_search=shared.family)

        try:
            return shared.finish(
                lambda: run_training(
                    config,
                    registry,
                    progress=say,
                    promote=promote,
                    select=select,
                    prepared=prepare(config, say, rows) if sampled else rows,
                    started=started,
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
