"""The data-quality gate: findings per column and rule, checked before anything is fitted."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from training.config import Quality
from training.data import FeatureKinds, ParsedTimes
from training.errors import TrainingError

MIN_CLASS_ROWS = 5
"""Rows a class needs at the least: one for the test set, one for validation, and two training
rows to stratify cross-validation folds on (plus one, so a fold's training part keeps two)."""


@dataclass(frozen=True)
class Finding:
    rule: str
    column: str | None
    value: float
    threshold: float
    message: str
    fails: bool


@dataclass
class QualityReport:
    rows: int
    findings: list[Finding]
    dropped_columns: list[str]
    groups: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    """Per sensitive column, each group's rows, share and target rate (see `group_report`)."""

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.fails]

    def to_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "passed": not self.failures,
            "dropped_columns": self.dropped_columns,
            "findings": [asdict(f) for f in self.findings],
            "sensitive_groups": self.groups,
        }

    def raise_if_failed(self) -> None:
        if self.failures:
            first = self.failures[0]
            more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
            raise TrainingError(f"data-quality gate failed: {first.message}{more}")


LEAK_FOLDS = 3
"""Folds of the leakage check's cross-fitting (shuffled: a file sorted by target hides nothing)."""
MAX_STAT_LEVELS = 100
"""A numeric column with at most this many distinct values is also scored by its per-value
target statistics (a numeric code is a category too: a depth-4 tree cannot split 25 codes)."""


def _leak_folds(y: pd.Series, task: str, seed: int) -> Any:
    """Shuffled folds, stratified for classification; None when a class has fewer than 2 rows."""
    if task != "classification":
        return KFold(LEAK_FOLDS, shuffle=True, random_state=seed)
    smallest = int(y.value_counts().min())
    if smallest < 2:
        return None
    return StratifiedKFold(min(LEAK_FOLDS, smallest), shuffle=True, random_state=seed)


def _target_matrix(y: pd.Series, task: str) -> np.ndarray:
    """The target as numbers: one column per class (one-hot, classes sorted as text) or the
    value itself."""
    if task != "classification":
        return y.to_numpy(dtype=float).reshape(-1, 1)
    text = y.astype(str).to_numpy()
    return np.column_stack([(text == c).astype(float) for c in sorted(set(text))])


def _oof_target_stats(codes: np.ndarray, t: np.ndarray, folds: list[Any]) -> np.ndarray:
    """Each row's category mean of the target, fitted on the other folds' rows (a category
    unseen there gets those rows' overall mean)."""
    out = np.empty_like(t)
    n_codes = int(codes.max()) + 1
    for tr, te in folds:
        counts = np.bincount(codes[tr], minlength=n_codes).astype(float)
        prior = t[tr].mean(axis=0)
        for j in range(t.shape[1]):
            sums = np.bincount(codes[tr], weights=t[tr, j], minlength=n_codes)
            means = np.where(counts > 0, sums / np.maximum(counts, 1), prior[j])
            out[te, j] = means[codes[te]]
    return out


def _oof_tree(values: np.ndarray, t: np.ndarray, task: str, folds: list[Any], seed: int) -> Any:
    """A shallow tree's out-of-fold predictions of the one feature (class shares or values)."""
    out = np.empty_like(t)
    for tr, te in folds:
        if task == "classification":
            labels = t[tr].argmax(axis=1)
            tree = DecisionTreeClassifier(max_depth=4, random_state=seed).fit(values[tr], labels)
            out[te] = 0.0
            out[np.ix_(te, tree.classes_)] = tree.predict_proba(values[te])
        else:
            reg = DecisionTreeRegressor(max_depth=6, random_state=seed).fit(values[tr], t[tr, 0])
            out[te, 0] = reg.predict(values[te])
    return out


def _aucs(pred: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Each column's ROC AUC of `pred` for the 0/1 truth in the same column of `t`, all at once:
    the Mann-Whitney statistic on average ranks (ties count a half, as in `roc_auc_score`,
    which costs ~5 ms a call in input checks: 1,280 calls for digits' 64 features, 6 s)."""
    ranks = np.asarray(rankdata(pred, axis=0), dtype=float)
    pos = t.sum(axis=0)
    neg = len(t) - pos
    aucs: np.ndarray = ((ranks * t).sum(axis=0) - pos * (pos + 1) / 2) / (pos * neg)
    return aucs


def _score(pred: np.ndarray, t: np.ndarray, task: str) -> float:
    """ROC AUC (either direction) for two classes; for more, the lowest of each class's
    one-vs-rest ROC AUC (a leak tells every class apart; an honest strong feature, such as
    iris's petal length, leaves two classes overlapping); R² for regression."""
    if task != "classification":
        return float(r2_score(t[:, 0], pred[:, 0]))
    if t.shape[1] == 2:
        auc = float(_aucs(pred[:, 1:], t[:, 1:])[0])
        return max(auc, 1 - auc)
    return float(_aucs(pred, t).min())


def _single_feature_score(x: pd.Series, y: pd.Series, task: str, seed: int) -> float:
    """How well one feature alone predicts the target, cross-fitted on shuffled folds: a
    shallow tree on its values (numeric) and its per-category target statistics (categorical,
    or numeric with few distinct values); the better of the two. ROC AUC or R²."""
    cv = _leak_folds(y, task, seed)
    if cv is None:
        return float("nan")
    t = _target_matrix(y, task)
    folds = list(cv.split(np.zeros(len(y)), t.argmax(axis=1) if task == "classification" else None))
    scores = []
    numeric = x.dtype != object and not isinstance(x.dtype, pd.CategoricalDtype)
    if numeric:
        values = x.to_numpy(dtype=float, na_value=np.nan).reshape(-1, 1)
        values = np.nan_to_num(
            values, nan=np.nanmin(values) - 1 if np.isfinite(values).any() else 0
        )
        scores.append(_score(_oof_tree(values, t, task, folds, seed), t, task))
    if not numeric or x.nunique(dropna=False) <= MAX_STAT_LEVELS:
        codes = pd.Series(pd.factorize(x.astype(object).where(x.notna(), "\0missing"))[0])
        scores.append(_score(_oof_target_stats(codes.to_numpy(), t, folds), t, task))
    return max(scores)


def time_findings(times: ParsedTimes, add: Callable[..., None]) -> None:
    """The time column's unreadable and missing values (failures), and a day-first reading."""
    col, n = times.column, len(times.values)
    if times.unparseable:
        add(
            "time_unparseable",
            col,
            times.unparseable,
            0,
            f"time column {col!r}: {times.unparseable} of {n} values cannot be read as times "
            f"(read {times.how}), e.g. {times.example!r}; set time_format (a strftime format such "
            "as '%d/%m/%Y %H:%M', or dayfirst) or clean them: an unread time sorts last and "
            "breaks the time order of the split",
            force_fail=True,
        )
    if times.missing:
        add(
            "time_missing",
            col,
            times.missing,
            0,
            f"time column {col!r} is missing in {times.missing} of {n} rows; a time-ordered "
            "split cannot place them (drop or fill those rows)",
            force_fail=True,
        )
    if times.how == "day first, detected":
        add(
            "time_dayfirst",
            col,
            0,
            0,
            f"time column {col!r} was read day first (month first left values unread); "
            "set time_format to choose",
        )


def _integral(s: pd.Series) -> bool:
    """Whole numbers only, whatever the dtype (numeric columns are float64 by now): what an
    integer identifier looks like."""
    if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return False
    values = s.dropna().to_numpy(dtype=float)
    return bool(len(values)) and bool(np.all(np.isfinite(values) & (np.mod(values, 1) == 0)))


class _Findings:
    """The findings of one check, in the order found; a rule in `fail_on` fails the run."""

    def __init__(self, fail_on: Collection[str]) -> None:
        self.fail_on = fail_on
        self.found: list[Finding] = []

    def add(
        self,
        rule: str,
        column: str | None,
        value: float,
        threshold: float,
        message: str,
        force_fail: bool = False,
    ) -> None:
        """Record a finding; `force_fail` fails the run whatever `fail_on` says."""
        self.found.append(
            Finding(
                rule,
                column,
                float(value),
                float(threshold),
                message,
                force_fail or rule in self.fail_on,
            )
        )


def check(
    frame: pd.DataFrame,
    *,
    target: str,
    task: str,
    kinds: FeatureKinds,
    declared: set[str],
    rules: Quality,
    seed: int,
    sensitive: list[str] | None = None,
    min_group_rows: int = 30,
    times: ParsedTimes | None = None,
) -> QualityReport:
    """Run every check; inferred id-like or constant columns are dropped, declared ones fail.
    Each `sensitive` column's groups are described, and a group under `min_group_rows` rows is a
    `small_group` finding. `times`, the time column as read, fails the run where a value is
    unreadable or missing (a time-ordered split cannot place it)."""
    found = _Findings(rules.fail_on)
    n = len(frame)
    if n < rules.min_rows:
        found.add(
            "min_rows", None, n, rules.min_rows, f"only {n} rows; at least {rules.min_rows} needed"
        )
    y = frame[target]
    _target_checks(found, y, target, task, rules)
    dropped: list[str] = []
    for col in kinds.all:
        if _column_checks(found, frame[col], col, kinds, declared, rules, n):
            dropped.append(col)
    if times is not None:
        time_findings(times, found.add)
    _duplicates(found, frame, [c for c in kinds.all if c not in dropped], rules)
    if y.notna().all() and y.nunique() >= 2:
        sample = frame.sample(min(n, 20_000), random_state=seed) if n > 20_000 else frame
        for col in kinds.all:
            if col in dropped or col in kinds.datetime:
                continue
            score = _single_feature_score(sample[col], sample[target], task, seed)
            if score >= rules.leakage_score:
                found.add(
                    "leakage",
                    col,
                    score,
                    rules.leakage_score,
                    f"column {col!r} alone predicts {target!r} almost perfectly "
                    f"(score {score:.3f}); suspected target leakage",
                )
    groups = {col: group_report(frame[col], y, task, min_group_rows) for col in sensitive or []}
    _small_groups(found, groups, min_group_rows)
    return QualityReport(rows=n, findings=found.found, dropped_columns=dropped, groups=groups)


def _target_checks(found: _Findings, y: pd.Series, target: str, task: str, rules: Quality) -> None:
    """Missing target values; for a classifier, a single class, a class too small to split,
    or an imbalance."""
    if y.isna().any():
        found.add(
            "target_missing",
            target,
            int(y.isna().sum()),
            0,
            f"target {target!r} is missing in {int(y.isna().sum())} rows",
        )
    if task != "classification":
        return
    counts = y.value_counts(normalize=True)
    if len(counts) < 2:
        found.add(
            "single_class",
            target,
            len(counts),
            2,
            f"target {target!r} has a single class ({counts.index[0]!r}); nothing to learn",
            force_fail=True,
        )
    elif (rows := int(y.value_counts().min())) < MIN_CLASS_ROWS:
        found.add(
            "min_class_rows",
            target,
            rows,
            MIN_CLASS_ROWS,
            f"class {counts.idxmin()!r} of {target!r} has only {rows} row(s); at least "
            f"{MIN_CLASS_ROWS} are needed to hold out test and validation rows and "
            "cross-validate (add rows of that class or merge it into another)",
            force_fail=True,
        )
    elif counts.min() < rules.min_class_share:
        found.add(
            "class_imbalance",
            target,
            counts.min(),
            rules.min_class_share,
            f"class {counts.idxmin()!r} of {target!r} is only {counts.min():.2%} of rows",
        )


def _column_checks(
    found: _Findings,
    s: pd.Series,
    col: str,
    kinds: FeatureKinds,
    declared: set[str],
    rules: Quality,
    n: int,
) -> bool:
    """A feature's missing share, constancy, identifier look and outliers; True when it is
    dropped (inferred, not declared, and constant or identifier-like)."""
    miss = float(s.isna().mean())
    if miss > rules.max_missing_share:
        found.add(
            "missing",
            col,
            miss,
            rules.max_missing_share,
            f"column {col!r} is missing in {miss:.1%} of rows "
            f"(limit {rules.max_missing_share:.0%})",
        )
    if s.nunique(dropna=True) <= 1:
        if col in declared:
            found.add("constant", col, 1, 1, f"column {col!r} is constant", force_fail=True)
            return False
        found.add("constant", col, 1, 1, f"column {col!r} is constant; dropped from the features")
        return True
    if col in kinds.categorical or _integral(s):
        uniq = s.nunique(dropna=True) / max(1, s.notna().sum())
        if uniq >= rules.id_unique_share and n >= 20:
            looks = f"column {col!r} looks like an identifier ({uniq:.0%} unique"
            if col in declared:
                found.add("identifier", col, uniq, rules.id_unique_share, f"{looks} values)")
                return False
            found.add("identifier", col, uniq, rules.id_unique_share, f"{looks}); dropped")
            return True
    if col in kinds.numeric:
        _outliers(found, s, col, rules)
    return False


def _outliers(found: _Findings, s: pd.Series, col: str, rules: Quality) -> None:
    """A numeric feature's share of values beyond 3 IQR from its quartiles."""
    vals = s.dropna().to_numpy(dtype=float)
    q1, q3 = np.percentile(vals, [25, 75])
    iqr = q3 - q1
    if iqr <= 0:
        return
    share = float(np.mean((vals < q1 - 3 * iqr) | (vals > q3 + 3 * iqr)))
    if share > rules.max_outlier_share:
        found.add(
            "outliers",
            col,
            share,
            rules.max_outlier_share,
            f"column {col!r} has {share:.1%} outliers beyond 3 IQR",
        )


def _duplicates(found: _Findings, frame: pd.DataFrame, features: list[str], rules: Quality) -> None:
    """Rows that repeat an earlier row's features, over `max_duplicate_share`."""
    n = len(frame)
    repeats = int(frame[features].duplicated().sum()) if n and features else 0
    if repeats / max(1, n) > rules.max_duplicate_share:
        found.add(
            "duplicates",
            None,
            repeats / n,
            rules.max_duplicate_share,
            f"{repeats} rows ({repeats / n:.1%}) repeat an earlier row's features: copies are "
            "kept on one side of every split (split.keep_copies_together; a row repeated over "
            "max(10, 1% of the rows) times is a natural repeat, split as any), and the model "
            "learns from fewer distinct rows than the count says",
        )


def _small_groups(
    found: _Findings, groups: dict[str, list[dict[str, object]]], min_group_rows: int
) -> None:
    """A `small_group` finding for each sensitive group under `min_group_rows` rows."""
    for col, described in groups.items():
        for g in described:
            if g["too_small"]:
                found.add(
                    "small_group",
                    col,
                    float(str(g["rows"])),
                    min_group_rows,
                    f"group {g['group']!r} of sensitive column {col!r} has only {g['rows']} "
                    f"row(s); under {min_group_rows} its rates and gaps are too noisy to measure",
                )


def group_report(
    groups: pd.Series, y: pd.Series, task: str, min_rows: int
) -> list[dict[str, object]]:
    """Each group of a sensitive column (missing is a group): rows, share of the rows, and its
    target rate: the positive (last-sorted) class's rate for two classes, every class's rate for
    more, the target's mean for regression. `too_small` when under `min_rows` rows."""
    names = groups.astype(object).where(groups.notna(), "__missing__").astype(str)
    labels = y.dropna()
    classes = sorted(labels.astype(str).unique()) if task == "classification" else []
    out: list[dict[str, object]] = []
    for name, rows in names.groupby(names, sort=True).groups.items():
        yg = y.loc[rows].dropna()
        item: dict[str, object] = {
            "group": str(name),
            "rows": len(rows),
            "share": round(len(rows) / max(1, len(names)), 6),
            "too_small": len(rows) < min_rows,
        }
        if task == "regression":
            item["target_mean"] = float(yg.mean()) if len(yg) else None
        elif len(classes) == 2:
            item["positive_class"] = classes[1]
            item["positive_rate"] = (
                float((yg.astype(str) == classes[1]).mean()) if len(yg) else None
            )
        else:
            item["class_rates"] = {c: float((yg.astype(str) == c).mean()) for c in classes}
        out.append(item)
    return out
