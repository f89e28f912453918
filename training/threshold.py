"""Choose the decision threshold: a binary classifier's operating point, tuned on validation data.

The threshold is chosen on the validation rows' probabilities of the calibrated model fitted on
the training rows (the final model is refitted on train + validation, as the calibration is),
never on the test rows. It is searched on a grid of 0.005 steps, as scikit-learn's
`TunedThresholdClassifierCV(cv="prefit", refit=False)` searches a given grid (a test checks both
choose the same threshold for F1); the first best threshold wins a tie.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from core import labels
from core.metrics import class_codes, classification_metrics
from training.config import Decision as DecisionConfig
from training.errors import TrainingError
from training.prepare import Prepared, Progress

if TYPE_CHECKING:  # fitting imports selection, which imports this module
    from training.fitting import Fitted

GRID = np.round(np.arange(0.005, 1.0, 0.005), 3)
"""The thresholds tried: 0.005, 0.01, ..., 0.995."""


@dataclass(frozen=True)
class Chosen:
    """The decision of a classifier: its threshold (None: argmax), the positive class's column
    and what the manifest records about it (`decision`)."""

    threshold: float | None
    positive: int
    record: dict[str, Any]


def positive_index(
    config: DecisionConfig, classes: list[Any], y_train: Any, label_type: labels.LabelType
) -> int:
    """The positive class's column among `classes` (sorted, as `predict_proba`): the config's
    `positive_label`, else 1 / True for integer / boolean labels, else the minority class of
    the training labels (the later class on a tie). ValueError names the field when the
    configured label is no class."""
    keys = [labels.key(c) for c in classes]
    given = config.positive_label
    if given is not None:
        want = labels.key(given)
        if want not in keys:
            raise ValueError(
                f"decision.positive_label: {given!r} is not one of the classes ({', '.join(keys)})"
            )
        return keys.index(want)
    if label_type in ("integer", "boolean"):
        for natural in ("1", "True"):
            if natural in keys:
                return keys.index(natural)
    counts = np.bincount(np.clip(class_codes(y_train, classes), 0, None), minlength=len(keys))
    return int(len(keys) - 1 - np.argmin(counts[::-1]))


def counts(
    p: npt.NDArray[np.float64], y: npt.NDArray[np.bool_], thresholds: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """True positives, false positives and false negatives at each threshold (p >= t)."""
    hit = p[None, :] >= thresholds[:, None]
    tp = (hit & y[None, :]).sum(axis=1).astype(float)
    fp = (hit & ~y[None, :]).sum(axis=1).astype(float)
    fn = float(y.sum()) - tp
    return tp, fp, fn


def _rates(tp: Any, fp: Any, fn: Any) -> tuple[Any, Any, Any]:
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return precision, recall, f1


def _figures(tp: float, fp: float, fn: float, n: int, config: DecisionConfig) -> dict[str, float]:
    precision, recall, f1 = (float(v) for v in _rates(tp, fp, fn))
    cost = (config.costs.fp * fp + config.costs.fn * fn) / max(n, 1)
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "cost_per_row": round(cost, 4),
        "predicted_positive_share": round((tp + fp) / max(n, 1), 4),
    }


def choose(
    config: DecisionConfig,
    classes: list[Any],
    label_type: labels.LabelType,
    y_train: Any,
    y_val: Any,
    val_proba: npt.NDArray[np.float64] | None,
    *,
    fixed_reason: str | None = None,
) -> Chosen:
    """The decision for a classifier from its validation probabilities (columns in `classes`
    order). Three or more classes, `fixed_reason` (e.g. a fairness mitigation that decides by
    itself), or no validation probabilities: argmax, with the reason recorded."""
    if len(classes) != 2:
        why = "three or more classes: the most probable class is predicted"
        return Chosen(None, 1, {"threshold": None, "objective": "argmax", "why": why})
    pos = positive_index(config, classes, y_train, label_type)
    native = labels.to_native(labels.key(classes[pos]), label_type)
    base = {"threshold": None, "positive_class": native}
    if fixed_reason is not None or val_proba is None:
        why = fixed_reason or "no validation probabilities"
        return Chosen(None, pos, {**base, "objective": "argmax", "why": why})
    objective, rule = _objective(config, class_codes(y_train, classes))
    truth = class_codes(y_val, classes) == pos
    p = np.asarray(val_proba, dtype=float)[:, pos]
    n = len(p)
    argmax_hit = np.asarray(val_proba).argmax(axis=1) == pos
    at_argmax = _figures(
        float((argmax_hit & truth).sum()),
        float((argmax_hit & ~truth).sum()),
        float((~argmax_hit & truth).sum()),
        n,
        config,
    )
    if objective == "argmax":
        why = f"argmax (the most probable class): {rule}"
        record = {**base, "objective": "argmax", "why": why, "validation": {"argmax": at_argmax}}
        return Chosen(None, pos, record)
    tp, fp, fn = counts(p, truth, GRID)
    precision, recall, f1 = _rates(tp, fp, fn)
    score, met = _score(config, objective, (precision, recall, f1, fp, fn), truth)
    if not met:
        best = float(precision.max() if objective == "precision_at" else recall.max())
        name = "precision" if objective == "precision_at" else "recall"
        why = (
            f"no threshold reaches validation {name} >= {config.target} (best {best:.3f}); "
            f"fallback: argmax (the most probable class). {rule}"
        )
        record = {
            **base,
            "objective": objective,
            "target": config.target,
            "met": False,
            "why": why,
            "validation": {"argmax": at_argmax},
        }
        return Chosen(None, pos, record)
    i = int(np.argmax(score))
    at_threshold = _figures(float(tp[i]), float(fp[i]), float(fn[i]), n, config)
    return _at_threshold(
        config, objective, rule, float(GRID[i]), pos, base, at_threshold, at_argmax
    )


def _objective(config: DecisionConfig, y: npt.NDArray[np.int64]) -> tuple[str, str]:
    """The objective (`auto`: f1 when the training labels' minority class is below
    `imbalance_share`, else argmax) and the rule that chose it, in words."""
    minority = float(min((y == 0).mean(), (y == 1).mean())) if len(y) else 0.0
    if config.objective != "auto":
        return config.objective, f"decision.objective is {config.objective}"
    imbalanced = minority < config.imbalance_share
    rule = (
        f"the minority class is {minority:.1%} of the training labels, "
        f"{'below' if imbalanced else 'not below'} decision.imbalance_share "
        f"{config.imbalance_share:.0%}"
    )
    return ("f1" if imbalanced else "argmax"), rule


Floats = npt.NDArray[np.float64]


def _score(
    config: DecisionConfig,
    objective: str,
    rates: tuple[Floats, Floats, Floats, Floats, Floats],
    truth: npt.NDArray[np.bool_],
) -> tuple[Floats, bool]:
    """Each grid threshold's score under `objective` (higher is better; -inf where a
    precision_at or recall_at target is missed), and whether any threshold meets the target.
    `rates`: precision, recall, F1, false positives and false negatives per threshold."""
    precision, recall, f1, fp, fn = rates
    if objective == "f1":
        return f1, True
    if objective == "cost":
        return -(config.costs.fp * fp + config.costs.fn * fn), True
    target = float(config.target or 0.0)
    reached = (precision if objective == "precision_at" else recall) >= target
    met = bool(reached.any()) and bool(truth.any())
    return np.where(reached, recall if objective == "precision_at" else precision, -np.inf), met


def _at_threshold(
    config: DecisionConfig,
    objective: str,
    rule: str,
    threshold: float,
    pos: int,
    base: dict[str, Any],
    at_threshold: dict[str, float],
    at_argmax: dict[str, float],
) -> Chosen:
    """The decision at the chosen `threshold`, with why in words and the validation figures
    at it and by argmax."""
    native = base["positive_class"]
    goal = {
        "f1": "the highest validation F1 of the positive class",
        "cost": f"the lowest validation cost ({config.costs.fp} per FP, {config.costs.fn} per FN)",
        "precision_at": f"the highest validation recall with precision >= {config.target}",
        "recall_at": f"the highest validation precision with recall >= {config.target}",
    }[objective]
    why = (
        f"{goal} ({rule}): threshold {threshold:g} on P({native}) gives F1 "
        f"{at_threshold['f1']:.3f}, precision {at_threshold['precision']:.3f}, recall "
        f"{at_threshold['recall']:.3f} on the validation rows, against F1 {at_argmax['f1']:.3f} "
        f"by argmax"
    )
    record = {
        **base,
        "threshold": threshold,
        "objective": objective,
        **({"target": config.target, "met": True} if config.target is not None else {}),
        **({"costs": config.costs.model_dump()} if objective == "cost" else {}),
        "why": why,
        "validation": {"threshold": at_threshold, "argmax": at_argmax},
    }
    return Chosen(threshold, pos, record)


def step(prepared: Prepared, fitted: Fitted, say: Progress) -> tuple[Fitted, Chosen | None]:
    """The decision step of a run: the classifier's decision (None for a regressor) and `fitted`
    with its validation metrics at that decision. A fairness mitigation decides by itself (its
    model is not the one the validation probabilities come from): argmax."""
    if prepared.task != "classification" or not prepared.classes:
        return fitted, None
    config = prepared.config
    mitigation = config.fairness.mitigation
    try:
        chosen = choose(
            config.decision,
            list(prepared.classes),
            prepared.label_type,
            prepared.splits.y_train,
            prepared.splits.y_val,
            fitted.validation_proba,
            fixed_reason=(
                f"fairness.mitigation is {mitigation}: the mitigated model decides by argmax"
                if mitigation != "none"
                else None
            ),
        )
    except ValueError as exc:
        raise TrainingError(f"config: {exc}") from None
    say(f"decision: {chosen.record['why']}")
    if fitted.validation_proba is not None:
        validation = classification_metrics(
            prepared.splits.y_val,
            fitted.validation_proba,
            prepared.classes,
            chosen.threshold,
            chosen.positive,
        )
        fitted = replace(fitted, validation=validation)
    return fitted, chosen


def check(prepared: Prepared) -> None:
    """Refuse a `decision.positive_label` that is no class, right after prepare (before the
    search spends its budget)."""
    if prepared.task == "classification" and prepared.classes and len(prepared.classes) == 2:
        try:
            positive_index(
                prepared.config.decision,
                list(prepared.classes),
                prepared.splits.y_train,
                prepared.label_type,
            )
        except ValueError as exc:
            raise TrainingError(f"config: {exc}") from None
