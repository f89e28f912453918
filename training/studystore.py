"""The distributed search's Optuna storage: its RDB storage, read back less often per trial."""

from __future__ import annotations

import copy
import json
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import FrozenTrial, TrialState


class OwnTrialsStorage(_CachedStorage):
    """Optuna's cached RDB storage (what `create_study` wraps an RDBStorage in), which also
    keeps its own copy of each trial this process created and is running: Optuna reads such a
    trial back from the database twice per trial (`Trial.__init__` and `tell`: six statements
    each, the trial and its five kinds of attributes) although only this process writes it.

    The copy follows every write this process makes to the trial (parameters, attributes,
    intermediate values) and is dropped once the trial's state is set. A trial this process did
    not create (another worker's, a dead worker's trial queued again and popped here) is read
    from the database as before. Another process writes a running trial only to fail it (its
    heartbeat stale): that process's own `tell` then fails in the database's check
    (`set_trial_state_values` refuses a finished trial) instead of in `tell`'s read."""

    def __init__(self, backend: RDBStorage) -> None:
        super().__init__(backend)
        self._own: dict[int, FrozenTrial] = {}

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        if template_trial is None:  # a template's trial (queued, WAITING) is not run here yet
            with self._lock:
                _, number = self._trial_id_to_study_id_and_number[trial_id]
                self._own[trial_id] = copy.deepcopy(self._studies[study_id].trials[number])
        return trial_id

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            own = self._own.get(trial_id)
            if own is not None:
                return copy.deepcopy(own)
        return super().get_trial(trial_id)

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
        with self._lock:
            own = self._own.get(trial_id)
            if own is not None:
                own.distributions = {**own.distributions, param_name: distribution}
                own.params = {
                    **own.params,
                    param_name: distribution.to_external_repr(param_value_internal),
                }

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        """As Optuna's, but the queue (what `ask` reads at every trial: the WAITING trials
        only) is looked up in one statement, and a queued trial found is then read whole:
        Optuna's read of new trials takes seven statements and builds every trial finished
        since the last read."""
        if states is None or [s for s in TrialState if s in states] != [TrialState.WAITING]:
            return super().get_all_trials(study_id, deepcopy, states)
        import sqlalchemy as sa

        query = "SELECT trial_id FROM trials WHERE study_id = :s AND state = 'WAITING'"
        with self._backend.engine.connect() as conn:
            ids = conn.execute(sa.text(query), {"s": study_id}).scalars().all()
        queued = [self._backend.get_trial(i) for i in ids]
        return sorted((t for t in queued if t.state == TrialState.WAITING), key=_number)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        """As Optuna's (refused once the trial is finished), in one statement instead of two
        (Optuna reads the trial first to check its state)."""
        import sqlalchemy as sa

        upsert = (
            "INSERT INTO trial_user_attributes (trial_id, key, value_json)"
            " SELECT trial_id, :k, :v FROM trials WHERE trial_id = :t AND state IN"
            " ('RUNNING', 'WAITING') ON CONFLICT (trial_id, key)"
            " DO UPDATE SET value_json = EXCLUDED.value_json"
        )
        args = {"t": trial_id, "k": key, "v": json.dumps(value)}
        with self._backend.engine.begin() as conn:
            if conn.execute(sa.text(upsert), args).rowcount != 1:
                raise UpdateFinishedTrialError(
                    f"trial {trial_id}: no such unfinished trial, attribute {key!r} not set"
                )
        self._update(trial_id, lambda t: t.user_attrs.__setitem__(key, _json(value)))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        super().set_trial_system_attr(trial_id, key, value)
        self._update(trial_id, lambda t: t.system_attrs.__setitem__(key, _json(value)))

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        super().set_trial_intermediate_value(trial_id, step, intermediate_value)
        self._update(
            trial_id, lambda t: t.intermediate_values.__setitem__(step, intermediate_value)
        )

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        with self._lock:
            self._own.pop(trial_id, None)  # read from the database from now on
        return super().set_trial_state_values(trial_id, state, values)

    def _update(self, trial_id: int, change: Any) -> None:
        with self._lock:
            own = self._own.get(trial_id)
            if own is not None:
                change(own)


def _number(trial: FrozenTrial) -> int:
    return trial.number


def _json(value: Any) -> Any:
    """`value` as the database gives it back (JSON: a tuple becomes a list)."""
    return json.loads(json.dumps(value))


@dataclass
class Seen:
    """A trial of a family's fixed study as `FixedTrials` reads it: what the claims, the
    counts and the results need."""

    _trial_id: int  # FrozenTrial's name for it
    number: int
    state: TrialState
    user_attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class FixedTrials:
    """The trials of one study, read incrementally in one statement (as Optuna's cache reads
    them: the trials after the last finished one, and those unfinished when last read), with the
    user attributes `keys` only. Optuna's own read takes seven statements and builds each trial
    with its parameters, values and intermediate values, which a fixed study's reader never
    uses."""

    study_id: int
    keys: tuple[str, ...]
    trials: dict[int, Seen] = field(default_factory=dict)
    after: int = -1
    open: set[int] = field(default_factory=set)

    def read(self, conn: Any) -> list[Seen]:
        """The study's trials in the order of their numbers, read on `conn`."""
        import sqlalchemy as sa

        rows = conn.execute(
            sa.text(
                "SELECT t.trial_id, t.number, t.state, a.key, a.value_json FROM trials t"
                " LEFT JOIN trial_user_attributes a"
                " ON a.trial_id = t.trial_id AND a.key = ANY(:keys)"
                " WHERE t.study_id = :study AND (t.trial_id > :after OR t.trial_id = ANY(:open))"
            ),
            {
                "keys": list(self.keys),
                "study": self.study_id,
                "after": self.after,
                "open": sorted(self.open),
            },
        )
        fresh: dict[int, Seen] = {}
        for trial_id, number, state, key, value in rows:
            seen = fresh.setdefault(
                trial_id, Seen(int(trial_id), int(number), TrialState[str(state)])
            )
            if key is not None:
                seen.user_attrs[key] = json.loads(value)
        self.trials.update(fresh)
        for trial_id, seen in fresh.items():
            if seen.state.is_finished():
                self.open.discard(trial_id)
                self.after = max(self.after, trial_id)
            else:
                self.open.add(trial_id)
        return sorted(self.trials.values(), key=lambda t: t.number)
