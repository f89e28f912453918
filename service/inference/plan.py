"""ServingPlan: which parts of a version's model call run on numpy, compiled trees or scikit-learn,
chosen once when the version loads (each fast path used only where it answers as the pipeline)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from service.inference.equality import same, same_decisions, same_rows
from service.inference.fastpath import FastEstimator, FastPreprocessor, NumericColumns

if TYPE_CHECKING:
    from service.inference.model import LoadedModel

log = logging.getLogger("servewatch.model")
ServingPath = Literal["numpy", "compiled", "sklearn", "mixed"]

WARNED = frozenset({"differs", "unchecked", "onnxruntime_missing"})
"""Reasons a part stays on scikit-learn although a fast path exists for it (the shipped
Prometheus rule ServewatchSlowServingPath warns on them)."""


@dataclass(frozen=True)
class Part:
    """How one part of a version's model call runs ("numpy", "compiled" or "sklearn") and, on
    scikit-learn, why: `reason` "none" (on its fast path), "unsupported" (no fast path
    implements it), "differs" (the fast path's answers differed on the check rows),
    "unchecked" (no check rows, or the pipeline refused them), "disabled" (turned off) or
    "onnxruntime_missing"; `detail` says what, in words."""

    runs: str
    reason: str = "none"
    detail: str = ""


@dataclass(frozen=True)
class ServingPlan:
    """How a version's model call runs: the verified numpy replay of its preprocessing (or a bare
    estimator's number columns as one matrix), the verified replay or compiled form of its final
    estimator, or a soft-voting ensemble's members (each on its own plan) and their weights;
    `parts` names what runs each part and why (in the order `servewatch models show` lists)."""

    parts: Mapping[str, Part]
    preprocessed: bool
    """Whether the pipeline has a preprocessing part before its final estimator."""
    pre: FastPreprocessor | NumericColumns | None = None
    estimator: FastEstimator | None = None
    members: tuple[LoadedModel, ...] = ()
    weights: list[float] | None = None

    @property
    def fast(self) -> bool:
        """Whether any fast path is used."""
        return self.pre is not None or self.estimator is not None or bool(self.members)

    @property
    def path(self) -> ServingPath:
        """Which code runs a model call: "numpy" (every fitted part replayed), "compiled" (the
        preprocessing replayed, the tree model compiled for ONNX Runtime), "sklearn" (none: the
        pipeline's own methods) or "mixed" (some parts, the others scikit-learn's own)."""
        if self.members:  # an ensemble: as its members run, together
            paths = {m.serving_path for m in self.members}
            if paths <= {"numpy", "compiled"}:
                return "compiled" if "compiled" in paths else "numpy"
            return "mixed"
        parts = [self.estimator is not None]
        if self.preprocessed:
            parts.append(self.pre is not None)
        if all(parts):
            return "compiled" if self.estimator and self.estimator.kind == "onnx" else "numpy"
        return "mixed" if any(parts) else "sklearn"


def everywhere(preprocessed: bool, part: Part) -> ServingPlan:
    """Every part on scikit-learn, for one reason (fast paths off, no rows to check on)."""
    names = ["preprocessing", "estimator"] if preprocessed else ["estimator"]
    return ServingPlan(dict.fromkeys(names, part), preprocessed)


def soft_voting(est: Any) -> bool:
    """scikit-learn's soft VotingClassifier or a VotingRegressor, fitted."""
    from sklearn.ensemble import VotingClassifier, VotingRegressor

    if isinstance(est, VotingClassifier):
        return est.voting == "soft" and hasattr(est, "estimators_")
    return isinstance(est, VotingRegressor) and hasattr(est, "estimators_")


def estimators(est: Any) -> list[Any]:
    """The fitted estimators that read the rows: an ensemble's members (voting, stacking), else
    the estimator itself."""
    from sklearn.ensemble import StackingClassifier, StackingRegressor

    members = getattr(est, "estimators_", None)
    voting = soft_voting(est) or type(est).__name__.startswith("Voting")
    if members is not None and (voting or isinstance(est, StackingClassifier | StackingRegressor)):
        return list(members)
    return [est]


def average(
    members: tuple[LoadedModel, ...], columns: dict[str, list[Any]], method: str, weights: Any
) -> np.ndarray[Any, Any]:
    """As VotingClassifier.predict_proba / VotingRegressor.predict: the members' answers,
    averaged with the ensemble's weights."""
    answers = [np.asarray(m.estimate(columns, method), dtype=float) for m in members]
    return np.average(answers, axis=0, weights=weights)


class _Notes:
    """The parts' plans as they are decided; a part left on scikit-learn is logged."""

    def __init__(self, model: LoadedModel, parts: Mapping[str, Part]) -> None:
        self.model = model
        self.parts = dict(parts)

    def stays(self, part: str, plan: Part) -> None:
        """`part` stays on scikit-learn, and why: logged (a warning where a fast path exists)."""
        if len(plan.detail) > 300:  # an exception's text can be long
            plan = Part(plan.runs, plan.reason, plan.detail[:297] + "...")
        self.parts[part] = plan
        level = logging.WARNING if plan.reason in WARNED else logging.INFO
        log.log(level, "%s v%s: %s on scikit-learn (%s: %s)", self.model.name,
                self.model.version, part, plan.reason, plan.detail)  # fmt: skip


def choose(model: LoadedModel, sample: pd.DataFrame, compiled: bool) -> ServingPlan:
    """The plan of `model`: the numpy replays of the preprocessing and of the final estimator
    where each gives the pipeline's exact output on `model.check_columns(sample)`, tree models
    compiled for ONNX Runtime unless `compiled` is False (checked the same way, predicted classes
    included); any other part stays scikit-learn's own, and the plan says why."""
    # The generated rows overflow on purpose (1e308 scaled): on both paths, warned by neither.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if model.preprocessing is None and soft_voting(model.final):
            return _members(model, sample, compiled)
        return _single(model, sample, compiled)


def _single(model: LoadedModel, sample: pd.DataFrame, compiled: bool) -> ServingPlan:
    off = model.serving.parts
    notes = _Notes(model, off)
    preprocessed = model.preprocessing is not None
    columns = model.check_columns(sample)
    final = model.final
    reads: Callable[[Any], Any] | None = None  # how the estimator reads the matrix
    pre: FastPreprocessor | NumericColumns | None = None
    bare: NumericColumns | None = None
    if model.preprocessing is None:  # a bare estimator: only on number columns, as one matrix
        names = [str(c) for c in getattr(final, "feature_names_in_", model.columns)]
        if set(names) - model.numeric or len(names) != len(model.columns):
            what = f"a bare {type(final).__name__} reading category or timestamp columns"
            notes.stays("estimator", Part("sklearn", "unsupported", what))
            return ServingPlan(notes.parts, preprocessed)
        bare = NumericColumns(names)
        expected = bare.transform(columns)
        if hasattr(final, "feature_names_in_"):
            reads = partial(pd.DataFrame, columns=names)
    else:
        fast, why = FastPreprocessor.attempt(model.pipeline)
        if fast is None:
            notes.stays("preprocessing", Part("sklearn", "unsupported", why))
        try:
            out = model.preprocessing.transform(model.frame(columns))
            expected = np.asarray(out.toarray() if hasattr(out, "toarray") else out)
        except Exception as exc:  # any doubt: the pipeline stays
            refused = Part("sklearn", "unchecked", f"the pipeline refuses a check row: {exc}")
            if fast is not None:
                notes.stays("preprocessing", refused)
            notes.stays("estimator", refused)
            return ServingPlan(notes.parts, preprocessed)
        if fast is not None and same(lambda: fast.transform(columns), lambda: expected):
            pre = fast
            notes.parts["preprocessing"] = Part("numpy")
        elif fast is not None:
            what = "the numpy replay differs from the pipeline on the check rows"
            notes.stays("preprocessing", Part("sklearn", "differs", what))
    est, code, detail = FastEstimator.attempt(final, compile=compiled)
    chosen: FastEstimator | None = None
    if est is not None:
        method = "predict_proba" if model.classes is not None else "predict"
        mine, own = getattr(est, method), getattr(final, method)

        def theirs(x: Any) -> Any:
            return own(x if reads is None else reads(x))

        if mine is not None and same_rows(mine, theirs, expected, model.decide):
            chosen = est
            notes.parts["estimator"] = Part("compiled" if est.kind == "onnx" else "numpy")
            if model.preprocessing is None:
                pre = bare
        else:
            what = f"the {est.kind} estimator differs from scikit-learn's on the check rows"
            notes.stays("estimator", Part("sklearn", "differs", what))
    else:
        notes.stays("estimator", Part("sklearn", code, detail))
    return ServingPlan(notes.parts, preprocessed, pre, chosen)


def _members(model: LoadedModel, sample: pd.DataFrame, compiled: bool) -> ServingPlan:
    """A soft-voting ensemble (training's `ensemble` family, or one fitted elsewhere): each
    member gets its own plan, checked against that member, and the weighted average of
    their answers is checked against the ensemble's own on the same rows, predicted classes
    included. Any doubt keeps scikit-learn, said in the log: a member that fails to load on
    its own, or an ensemble that refuses a check row (a member without an imputer, say:
    the rows hold a missing value of every feature), is not compared row by row (scikit-
    learn's ensemble takes tens of ms a row). A member's `answers` are not used: members
    are fitted on the ensemble's class indices."""
    voting = model.final
    # as scikit-learn weighs: one weight per member that was not dropped
    weights = (
        None
        if voting.weights is None
        else [w for (_, e), w in zip(voting.estimators, voting.weights, strict=True)
              if e != "drop"]
    )  # fmt: skip
    method = "predict_proba" if model.classes is not None else "predict"
    notes = _Notes(model, {})
    try:
        members = tuple(model.member(est) for est in voting.estimators_)
        for member in members:
            member.enable_fast_path(sample, compiled=compiled)
        parts = {
            f"member {i} {part}": p for i, m in enumerate(members) for part, p in m.plan.items()
        }
        if all(m.serving_path == "sklearn" for m in members):
            return ServingPlan(parts, False)
        columns = model.check_columns(sample)
        want = np.asarray(getattr(voting, method)(model.frame(columns)), dtype=float)
        got = average(members, columns, method, weights)
    except Exception as exc:
        notes.stays("ensemble", Part("sklearn", "unchecked", f"stays on scikit-learn: {exc}"))
        return ServingPlan(notes.parts, False)
    if not (
        same(lambda: got, lambda: want)
        and same_decisions(lambda _: got, lambda _: want, want, model.decide)
    ):
        what = "the members' fast paths, averaged, differ from the ensemble"
        notes.stays("ensemble", Part("sklearn", "differs", what))
        return ServingPlan(notes.parts, False)
    return ServingPlan(parts, False, members=members, weights=weights)
