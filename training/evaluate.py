"""Test-set evaluation: metrics, baseline, worst slices, plots and permutation importance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.inspection import permutation_importance
from sklearn.metrics import confusion_matrix

from core.decision import decide
from core.metrics import classification_metrics, regression_metrics
from core.missing import as_trained


def score_model(
    model: Any,
    x: pd.DataFrame,
    y: pd.Series,
    task: str,
    threshold: float | None = None,
    positive: int = 1,
) -> dict[str, float]:
    """Every metric of the task for a fitted model on (x, y); a classifier's classes decided
    with its `threshold` (None: argmax) for the class in column `positive`. Gaps reach the model
    as it was trained with them (`core.missing.as_trained`), as the service sends them."""
    x = as_trained(x, model)
    if task == "classification":
        classes = list(model.classes_)
        return classification_metrics(y, model.predict_proba(x), classes, threshold, positive)
    return regression_metrics(y, model.predict(x))


def predict(
    model: Any, x: pd.DataFrame, task: str, threshold: float | None = None, positive: int = 1
) -> np.ndarray[Any, Any]:
    """The model's answers on x: a classifier's classes decided as the service decides them."""
    x = as_trained(x, model)
    if task == "classification":
        proba = np.asarray(model.predict_proba(x), dtype=float)
        picked: np.ndarray[Any, Any] = np.asarray(model.classes_)[
            decide(proba, threshold, positive)
        ]
        return picked
    return np.asarray(model.predict(x))


def baseline_metrics(
    x_train: pd.DataFrame, y_train: pd.Series, x_test: pd.DataFrame, y_test: pd.Series, task: str
) -> dict[str, float]:
    """The trivial model to beat: the majority class (prior probabilities) or the mean."""
    dummy = DummyClassifier(strategy="prior") if task == "classification" else DummyRegressor()
    dummy.fit(x_train, y_train)
    return score_model(dummy, x_test, y_test, task)


def worst_slices(
    x: pd.DataFrame,
    y: pd.Series,
    pred: np.ndarray[Any, Any],
    task: str,
    columns: list[str],
    *,
    min_rows: int = 30,
    top: int = 10,
) -> list[dict[str, Any]]:
    """Slices (one value of a categorical, one quartile of a numeric) ranked by their error."""
    err = (
        np.array([str(a) != str(b) for a, b in zip(y, pred, strict=True)], dtype=float)
        if task == "classification"
        else np.abs(np.asarray(y, dtype=float) - np.asarray(pred, dtype=float))
    )
    overall = float(err.mean())
    rows: list[dict[str, Any]] = []
    for col in columns:
        s = x[col]
        if pd.api.types.is_numeric_dtype(s) and s.nunique() > 10:
            groups = pd.qcut(s, 4, duplicates="drop").astype(str)
        else:
            groups = s.astype(str)
        frame = pd.DataFrame({"g": groups.to_numpy(), "e": err})
        for value, part in frame.groupby("g", observed=True):
            if len(part) >= min_rows:
                rows.append(
                    {
                        "feature": col,
                        "slice": str(value),
                        "rows": int(len(part)),
                        "error": float(part["e"].mean()),
                        "overall_error": overall,
                    }
                )
    rows.sort(key=lambda r: r["error"], reverse=True)
    return rows[:top]


def importance(
    model: Any, x: pd.DataFrame, y: pd.Series, scoring: Any, seed: int, *, max_rows: int = 2000
) -> dict[str, float]:
    """Permutation importance of each raw input feature on (a sample of) the test set."""
    if len(x) > max_rows:
        idx = np.random.default_rng(seed).choice(len(x), max_rows, replace=False)
        x, y = x.iloc[idx], y.iloc[idx]
    res = permutation_importance(model, x, y, scoring=scoring, n_repeats=5, random_state=seed)
    pairs = sorted(zip(x.columns, res.importances_mean, strict=True), key=lambda p: -p[1])
    return {str(k): float(v) for k, v in pairs}


def save_plots(
    out: Path,
    task: str,
    y: pd.Series,
    pred: np.ndarray[Any, Any],
    classes: list[Any] | None,
    importances: dict[str, float],
) -> list[str]:
    """Confusion matrix or residual plots, and an importance bar chart, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if task == "classification" and classes is not None:
        as_text = [str(c) for c in classes]  # object arrays of ints are "unknown" to sklearn
        cm = confusion_matrix([str(v) for v in y], [str(v) for v in pred], labels=as_text)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(len(classes)), [str(c) for c in classes])
        ax.set_yticks(range(len(classes)), [str(c) for c in classes])
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("Confusion matrix (test set)")
        fig.tight_layout()
        fig.savefig(out / "confusion_matrix.png", dpi=100)
        plt.close(fig)
        written.append("confusion_matrix.png")
    elif task == "regression":
        yv = np.asarray(y, dtype=float)
        res = yv - np.asarray(pred, dtype=float)
        fig, axes = plt.subplots(1, 2, figsize=(9, 4))
        axes[0].scatter(pred, res, s=4, alpha=0.4)
        axes[0].axhline(0, color="k", lw=1)
        axes[0].set_xlabel("predicted")
        axes[0].set_ylabel("residual")
        axes[1].hist(res, bins=40)
        axes[1].set_xlabel("residual")
        fig.suptitle("Residuals (test set)")
        fig.tight_layout()
        fig.savefig(out / "residuals.png", dpi=100)
        plt.close(fig)
        written.append("residuals.png")
    if importances:
        items = list(importances.items())[:20][::-1]
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(items) + 1))
        ax.barh([k for k, _ in items], [v for _, v in items])
        ax.set_title("Permutation importance (test set)")
        fig.tight_layout()
        fig.savefig(out / "permutation_importance.png", dpi=100)
        plt.close(fig)
        written.append("permutation_importance.png")
    return written


def save_contribution_plot(
    out: Path, features: list[str], contributions: np.ndarray[Any, Any], method: str
) -> str:
    """Mean |contribution| per feature and the spread of contributions, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(np.abs(contributions).mean(axis=0))[-15:]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(order) + 1.5), sharey=True)
    names = [features[i] for i in order]
    axes[0].barh(names, np.abs(contributions[:, order]).mean(axis=0))
    axes[0].set_xlabel("mean |contribution|")
    rng = np.random.default_rng(0)
    for row, i in enumerate(order):
        jitter = rng.uniform(-0.25, 0.25, len(contributions))
        axes[1].scatter(contributions[:, i], row + jitter, s=4, alpha=0.4)
    axes[1].axvline(0, color="k", lw=0.8)
    axes[1].set_xlabel("contribution per row")
    fig.suptitle(f"Feature contributions on the test set ({method})")
    fig.tight_layout()
    fig.savefig(out / "shap_summary.png", dpi=100)
    plt.close(fig)
    return "shap_summary.png"
