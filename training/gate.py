"""The promotion gate: a challenger against the champion on the same rows, as a typed verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict

import pandas as pd
from sklearn.base import BaseEstimator

from core import labels
from core import metrics as metric_contract
from core.decision import Decision
from training import evaluate, fairness


class GateCheck(TypedDict):
    """Both models scored on one set of rows."""

    champion: float
    challenger: float
    rows: int
    worse_by: float  # how much worse the challenger is, in the metric's direction
    passed: bool  # worse_by <= margin
    champion_from: NotRequired[str]
    """Set when the champion's figure is its manifest's test score rather than measured here."""
    challenger_from: NotRequired[str]
    """Set with `champion_from`: the challenger's figure is its tested model's too."""
    note: NotRequired[str]
    """Set when both models learnt these rows (an incremental update of a refitted champion)."""
    counts: NotRequired[bool]
    """False when the check is for information only and does not decide the verdict (with
    `note`: a score on rows both models learnt)."""


class FairnessVerdict(TypedDict, total=False):
    """Demographic parity difference per sensitive column; empty when nothing was measured."""

    champion: dict[str, float]
    challenger: dict[str, float]
    passed: bool
    wider_gaps: list[str]  # columns where the challenger's gap is wider beyond the margin


class GateVerdict(TypedDict):
    """The manifest's `gate`: promote only when `passed`."""

    passed: bool
    metric: str
    margin: float
    fairness_margin: float
    checks: dict[str, GateCheck]  # recent_window, original_test
    fairness: FairnessVerdict
    data_quality: str


INFORMATIONAL = (
    "for information only (a score on rows the champion learnt rewards memorising them: it does "
    "not decide)"
)


@dataclass(frozen=True)
class Rows:
    """Rows both models are judged on: inputs in the champion's schema and true labels."""

    x: pd.DataFrame
    y: pd.Series


@dataclass(frozen=True)
class Gate:
    """Not worse than the champion by more than `margin` on any of `checks`, and no demographic
    parity gap on `fairness_rows` wider by more than `fairness_margin`."""

    champion: BaseEstimator
    task: str
    metric: str
    margin: float
    fairness_margin: float
    checks: dict[str, Rows]
    fairness_rows: Rows  # the rows fairness is measured on (classification only)
    groups: pd.DataFrame  # their sensitive columns (none: no fairness check)
    champion_decision: Decision = (None, 1)
    """The champion's threshold (None: argmax) and positive column, from its manifest."""
    recorded: dict[str, float] = field(default_factory=dict)
    """Checks whose champion figure is recorded, not measured: a champion refitted on all rows
    learnt its original test rows, so its tested model's test score stands for it there, against
    the challenger's tested model (`verdict`'s `tested`) on the same rows."""
    partial: frozenset[str] = frozenset()
    """Checks whose rows are only part of the rows a recorded figure covers (a retrained parent's
    test rows partly came from its log window, not the data file): both published models are
    measured there, for information only (the champion learnt those rows by its refit)."""

    def _informational(self, label: str) -> str | None:
        """Why the check on `label` decides nothing (both published models learnt its rows), or
        None when it decides."""
        if label in self.partial:
            return "only part of the champion's test rows (the rest came from its log window)"
        if label in self.recorded:
            return (
                "both models learnt these rows (the champion by its refit on all rows, the "
                "challenger from it)"
            )
        return None

    def verdict(
        self,
        challenger: BaseEstimator,
        classes: Sequence[object] | None,
        decision: Decision = (None, 1),
        tested: BaseEstimator | None = None,
    ) -> GateVerdict:
        """Judge `challenger`, its classes decided by its own `decision` (threshold, positive
        column; the champion's by `champion_decision`); `classes` are its manifest's. On the
        `recorded` checks the challenger is judged by `tested`, its model before a refit on all
        rows (None: `challenger` itself is the tested model); with no tested model there (an
        incremental update, which learnt what the champion learnt) both published models are
        measured."""
        judge = metric_contract.get(self.metric)
        checks: dict[str, GateCheck] = {}
        champ_d = self.champion_decision
        for label, rows in self.checks.items():
            recorded = label in self.recorded and tested is not None
            champ_s = (
                self.recorded[label] if recorded else self._score(self.champion, rows, champ_d)
            )
            chall_s = self._score(tested if recorded else challenger, rows, decision)
            worse_by = judge.worse_by(champ_s, chall_s)
            checks[label] = {
                "champion": champ_s,
                "challenger": chall_s,
                "rows": len(rows.x),
                "worse_by": worse_by,
                "passed": bool(worse_by <= self.margin),
            }
            if recorded:
                checks[label]["champion_from"] = (
                    "its manifest's metrics.test: the tested model, before its refit on all rows"
                )
                checks[label]["challenger_from"] = (
                    "its tested model, before its refit on all rows (which learnt these rows, "
                    "as the champion's did)"
                )
            elif (why := self._informational(label)) is not None:
                checks[label]["counts"] = False
                checks[label]["note"] = f"{why}: both published models measured, {INFORMATIONAL}"
        fair = self._fairness(challenger, classes, decision)
        deciding = [c for c in checks.values() if c.get("counts", True)]
        passed = all(c["passed"] for c in deciding) and fair.get("passed", True)
        return {
            "passed": bool(passed),
            "metric": self.metric,
            "margin": self.margin,
            "fairness_margin": self.fairness_margin,
            "checks": checks,
            "fairness": fair,
            "data_quality": "passed (the run would have failed otherwise)",
        }

    def _score(self, model: BaseEstimator | None, rows: Rows, decision: Decision) -> float:
        scores = evaluate.score_model(model, rows.x, rows.y, self.task, *decision)
        return scores[self.metric]

    def _fairness(
        self, challenger: BaseEstimator, classes: Sequence[object] | None, decision: Decision
    ) -> FairnessVerdict:
        sensitive = list(self.groups.columns)
        if self.task != "classification" or not sensitive or not classes:
            return {}
        positive = labels.key(classes[decision[1]])  # compared as text, like classes
        y_text = self.fairness_rows.y.map(labels.key)
        gaps: dict[str, dict[str, float]] = {}
        for name, pipe, decided in (
            ("champion", self.champion, self.champion_decision),
            ("challenger", challenger, decision),
        ):
            answers = evaluate.predict(pipe, self.fairness_rows.x, self.task, *decided)
            predicted = pd.Series([labels.key(p) for p in answers])
            rep = fairness.fairness_report(
                self.groups, y_text, predicted.to_numpy(), self.task, positive
            )
            gaps[name] = {c: r["demographic_parity_difference"] for c, r in rep.items()}
        wider = [
            c
            for c in sensitive
            if gaps["challenger"][c] > gaps["champion"][c] + self.fairness_margin
        ]
        return {
            "champion": gaps["champion"],
            "challenger": gaps["challenger"],
            "passed": not wider,
            "wider_gaps": wider,
        }
