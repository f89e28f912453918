"""Alert rules: pure functions over a run summary, with hysteresis; notifiers behind a protocol."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core import metrics as metric_contract
from monitoring.summary import (
    AlertDict,
    AlertState,
    AlertStatus,
    ExplanationDrift,
    MonitorSummary,
    Severity,
)

log = logging.getLogger("servewatch.alerts")

MIN_ATTRIBUTION_SHARE = 0.01
"""explanation_drift ignores features with less than this share of the total mean |contribution|."""


class AlertRules(BaseModel):
    """Thresholds; every rule can be changed in the rules file (SERVEWATCH_ALERT_RULES)."""

    model_config = ConfigDict(extra="forbid")
    min_rows: int = Field(200, ge=1)
    """Fewer logged rows in the window: the run reports `insufficient_data`, never a silent pass."""
    drift_share: float = 0.5
    """Dataset drift: share of drifted features above this."""
    important_features: list[str] = Field(default_factory=list)
    """Any of these drifting fires `feature_drift`."""
    metric: str | None = None
    """Performance metric watched (default: the version's objective metric)."""
    performance_floor: float | None = None
    """Absolute bound for realised and estimated performance: a floor, or a ceiling for metrics
    where lower is better (rmse, mae, log_loss, brier)."""
    max_drop: float = Field(0.05, ge=0)
    """A material worsening (a fall, or a rise for metrics where lower is better; a share of the
    baseline for rmse and mae): of the realised score from the version's test score (its score
    on the test and out-of-fold rows, `reference.baseline`, where it has one), and of the
    estimated score from the same estimate on the version's reference sample (where the log has
    one; else the test score). With a noise band of width w (at `confidence`) a performance rule
    breaches when the drop is beyond w (significant) and the drop plus w reaches `max_drop` (a
    material drop cannot be ruled out): a drop beyond max(w, max_drop - w). Small windows are
    judged by the band; a window whose band is narrow breaches from `max_drop - w`, so a
    significant drop that is below `max_drop` by more than its band never fires."""
    confidence: float = Field(0.99, gt=0.5, lt=1)
    """Noise bands: a healthy window stays inside its band this often. A performance rule
    breaches only beyond the band for the window's rows (see `max_drop`; a `performance_floor`
    only below the floor by more than the band); explanation drift only beyond both
    `explanation_change` and its band."""
    explanation_change: float = Field(0.25, ge=0)
    """explanation_drift: a feature's mean |contribution| moved by more than this share of its
    value on the reference sample (and beyond the noise band)."""
    min_labelled_rows: int = Field(100, ge=1)
    missing_share_increase: float = 0.1
    """Missing share of a feature above its reference share by more than this."""
    out_of_range_share: float = 0.1
    """Share of numeric values outside the training range (any feature) above this."""
    unseen_category_share: float = 0.1
    """Share of a categorical feature's values that are no category seen in training above this."""
    fire_after: int = Field(1, ge=1)
    """Consecutive breaching runs before an alert fires."""
    resolve_after: int = Field(2, ge=1)
    """Consecutive clear runs before a firing alert resolves (no flapping)."""

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        if value is not None:
            metric_contract.get(value)  # ValueError names the known metrics
        return value


def load_rules(path: Path | None) -> AlertRules:
    if path is None:
        return AlertRules()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return AlertRules.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"alert rules {path}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(
            f"alert rules {path}: {'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from None


@dataclass(frozen=True)
class Condition:
    rule: str
    breached: bool | None  # None: cannot judge this run (e.g. no labels yet)
    value: float | None
    threshold: float | None
    message: str
    severity: Severity = "warning"


@dataclass(frozen=True)
class Alert:
    model: str
    version: int
    rule: str
    status: AlertStatus
    severity: Severity
    value: float | None
    threshold: float | None
    message: str
    since: float | None

    def as_dict(self) -> AlertDict:
        """The alert as JSON (the summary's `alerts` and `transitions`, notifier payloads): its
        fields, which are AlertDict's keys (tests/monitoring/test_alerts.py holds them equal)."""
        return cast(AlertDict, asdict(self))


Rule = Callable[[MonitorSummary, AlertRules], "Condition | None"]
"""One alert rule: its verdict on a run summary, or None when the run gives it nothing to judge
(the rule's state is then kept as it was)."""


def _enough(summary: MonitorSummary, rules: AlertRules) -> bool:
    return summary["rows"] >= rules.min_rows


def _insufficient_data(summary: MonitorSummary, rules: AlertRules) -> Condition | None:
    rows = summary["rows"]
    return Condition(
        "insufficient_data",
        not _enough(summary, rules),
        rows,
        rules.min_rows,
        f"only {rows} predictions in the window; at least {rules.min_rows} needed to judge drift",
        "info",
    )


def _dataset_drift(summary: MonitorSummary, rules: AlertRules) -> Condition | None:
    drift = summary.get("drift")
    if not (_enough(summary, rules) and drift):
        return None
    share = drift["drifted_share"]
    return Condition(
        "dataset_drift",
        share > rules.drift_share,
        share,
        rules.drift_share,
        f"{share:.0%} of features drifted (limit {rules.drift_share:.0%}): "
        + ", ".join(c for c, d in drift["columns"].items() if d["drifted"]),
    )


def _feature_drift(summary: MonitorSummary, rules: AlertRules) -> Condition | None:
    drift = summary.get("drift")
    if not (_enough(summary, rules) and drift and rules.important_features):
        return None
    columns = drift["columns"]
    drifted = [f for f in rules.important_features if f in columns and columns[f]["drifted"]]
    return Condition(
        "feature_drift",
        bool(drifted),
        len(drifted),
        0,
        f"important feature(s) drifted: {', '.join(drifted) or 'none'}",
        "critical",
    )


def _worst_share(
    summary: MonitorSummary,
    rules: AlertRules,
    key: Literal["missing_increase", "out_of_range_share", "unseen_category_share"],
) -> tuple[str | None, float] | None:
    """The data-quality figure `key`'s worst feature and share; None when not judged this run."""
    quality = summary.get("quality")
    if not (_enough(summary, rules) and quality):
        return None
    shares: Mapping[str, float] = quality.get(key, {})
    return max(shares.items(), key=lambda kv: kv[1], default=(None, 0.0))


def _share_rule(
    summary: MonitorSummary,
    rules: AlertRules,
    key: Literal["missing_increase", "out_of_range_share", "unseen_category_share"],
    rule: str,
    limit: float,
    what: str,
) -> Condition | None:
    """A data-quality rule: the worst feature's share of `key` above `limit`; `what` words the
    message from the share and the feature."""
    worst = _worst_share(summary, rules, key)
    if worst is None:
        return None
    share, feature = worst[1], worst[0]
    return Condition(rule, share > limit, share, limit, what.format(share=share, f=feature))


def _missing_values(summary: MonitorSummary, rules: AlertRules) -> Condition | None:
    return _share_rule(
        summary, rules, "missing_increase", "missing_values", rules.missing_share_increase,
        "missing share of {f!r} up by {share:.0%}",
    )  # fmt: skip


def _out_of_range(summary: MonitorSummary, rules: AlertRules) -> Condition | None:
    return _share_rule(
        summary, rules, "out_of_range_share", "out_of_range", rules.out_of_range_share,
        "{share:.0%} of {f!r} outside the training range",
    )  # fmt: skip


def _unseen_categories(summary: MonitorSummary, rules: AlertRules) -> Condition | None:
    return _share_rule(
        summary, rules, "unseen_category_share", "unseen_categories", rules.unseen_category_share,
        "{share:.0%} of {f!r} are categories unseen in training",
    )  # fmt: skip


def _canary_performance(summary: MonitorSummary, _rules: AlertRules) -> Condition | None:
    canary = summary.get("canary")
    if not (canary and "worse" in canary):
        return None
    return Condition(
        "canary_performance",
        canary["worse"],
        canary["realised"],
        canary["limit"],
        f"canary v{canary['version']} {canary['realised']:.3f} vs production "
        f"{canary['production']:.3f} (limit {canary['limit']:.3f}"
        + (f", noise band {canary['band']:.3g}" if "band" in canary else "")
        + f", {canary['labelled_rows']:,} labels)"
        + (" (withdrawn)" if canary.get("withdrawn") else ""),
        "critical",
    )


def _realised_performance(summary: MonitorSummary, rules: AlertRules) -> Condition | None:
    return _performance_condition("realised", summary, rules)


def _estimated_performance(summary: MonitorSummary, rules: AlertRules) -> Condition | None:
    return _performance_condition("estimated", summary, rules)


def _explanation_drift(summary: MonitorSummary, rules: AlertRules) -> Condition | None:
    explanation = summary.get("explanation_drift")
    if not (_enough(summary, rules) and explanation):
        return None
    return _explanation_condition(explanation, rules)


RULES: dict[str, Rule] = {
    "insufficient_data": _insufficient_data,
    "dataset_drift": _dataset_drift,
    "feature_drift": _feature_drift,
    "missing_values": _missing_values,
    "out_of_range": _out_of_range,
    "unseen_categories": _unseen_categories,
    "canary_performance": _canary_performance,
    "realised_performance": _realised_performance,
    "estimated_performance": _estimated_performance,
    "explanation_drift": _explanation_drift,
}
"""Every alert rule by name, in the order a run's verdicts are listed."""


def conditions(summary: MonitorSummary, rules: AlertRules) -> list[Condition]:
    """Every rule's verdict on one run summary (the rules this run gives something to judge)."""
    verdicts = (rule(summary, rules) for rule in RULES.values())
    return [c for c in verdicts if c is not None]


def _worse(metric: metric_contract.Metric, value: float, by: float) -> float:
    """`value` made worse by `by` (in the metric's units)."""
    return value - by if metric.higher_is_better else value + by


def drop_bound(
    judge: metric_contract.Metric, baseline: float, max_drop: float, width: float | None
) -> float:
    """The value a window must be worse than to breach `max_drop` from `baseline`, given the noise
    band `width` of its figure: the drop must be significant (beyond the band) and material (its
    upper confidence bound, the drop plus the band, reaches `max_drop`), i.e. worse than both
    `baseline` by `width` and `baseline` by `max_drop - width`. Without a band: `max_drop` alone."""
    by_drop = judge.limit(baseline, max_drop)
    if width is None:
        return by_drop
    by_noise = _worse(judge, baseline, width)
    material = _worse(judge, by_drop, -width)
    return material if judge.meets(by_noise, material) else by_noise


def _performance_condition(
    kind: Literal["realised", "estimated"], summary: MonitorSummary, rules: AlertRules
) -> Condition:
    """realised_performance or estimated_performance: the watched metric against the bounds
    (`performance_floor`, `max_drop` from the baseline: `drop_bound`), breached only beyond the
    noise band of a window of this many rows where the run measured one (`performance.noise`)."""
    metric = rules.metric or summary.get("metric")
    test_score = summary.get("test_score")
    performance = summary.get("performance")
    rule = f"{kind}_performance"
    scores = performance.get(kind) if performance else None
    value = scores.get(metric) if scores and metric else None
    if kind == "realised" and (performance.get("realised_rows", 0) if performance else 0) < (
        rules.min_labelled_rows
    ):
        value = None
    if metric is None or value is None or value != value:  # missing or NaN
        return Condition(rule, None, None, None, f"no {kind} {metric} this run")
    noise = performance.get("noise") if performance else None
    judge = metric_contract.get(metric)
    band = noise[kind] if noise else None
    width = band["widths"].get(metric) if band else None
    limits: list[float] = []
    if rules.performance_floor is not None:
        floor = rules.performance_floor
        limits.append(_worse(judge, floor, width) if width is not None else floor)
    baseline, against = test_score, "test score"
    unseen = summary.get("baseline")
    if unseen is not None:  # measured on more unseen rows than the test score
        baseline, against = unseen["score"], f"score on {unseen['rows']:,} unseen rows"
    # The label-free estimate is judged against itself on the reference sample: an estimate read
    # from the model's own probabilities is biased wherever they are not perfectly calibrated, and
    # the bias is the same on both, so only a change in the traffic moves the difference.
    ref_scores = performance.get("reference_estimated") if performance else None
    ref_estimate = ref_scores.get(metric) if ref_scores else None
    if kind == "estimated" and ref_estimate is not None and ref_estimate == ref_estimate:
        baseline, against = ref_estimate, "estimate on the reference sample"
    if baseline is not None:
        limits.append(drop_bound(judge, baseline, rules.max_drop, width))
    threshold = judge.strictest(limits)
    breached = threshold is not None and not judge.meets(value, threshold)
    said = f"{kind} {metric} {value:.3f}"
    if band and width is not None and noise is not None:
        said += f" (noise band {width:.3g} at {noise['confidence']:.0%} for {band['rows']:,} rows)"
    return Condition(
        rule,
        breached,
        value,
        threshold,
        f"{said} {judge.shortfall} {threshold:.3f} ({against} "
        f"{baseline if baseline is not None else float('nan'):.3f})"
        if breached
        else said,
        "critical",
    )


def _explanation_condition(explanation: ExplanationDrift, rules: AlertRules) -> Condition:
    """explanation_drift: a feature whose mean |contribution| moved by more than
    `explanation_change` of its reference value and beyond its noise band (where measured)."""
    moved: list[tuple[str, float]] = []
    features = {
        name: f
        for name, f in explanation["features"].items()
        if isinstance(f.get("reference"), float | int) and isinstance(f.get("change"), float | int)
    }
    total = sum(f["reference"] for f in features.values())
    changes: dict[str, float] = {}
    for name, f in features.items():
        if f["reference"] <= MIN_ATTRIBUTION_SHARE * total:
            continue  # a feature the model hardly uses: its relative changes are noise
        changes[name] = f["change"] / f["reference"]
        band = f.get("band")
        if abs(changes[name]) > rules.explanation_change and (
            band is None or abs(f["change"]) > band
        ):
            moved.append((name, changes[name]))
    moved.sort(key=lambda m: -abs(m[1]))
    worst = max((abs(c) for c in changes.values()), default=0.0)
    return Condition(
        "explanation_drift",
        bool(moved),
        abs(moved[0][1]) if moved else worst,
        rules.explanation_change,
        "mean |contribution| moved beyond chance: "
        + ", ".join(f"{n} {r:+.0%}" for n, r in moved[:5])
        if moved
        else f"largest change of a feature's mean |contribution| {worst:.0%}",
    )


def evaluate(
    summary: MonitorSummary,
    rules: AlertRules,
    states: Mapping[str, AlertState],
    now: float | None = None,
) -> tuple[list[Alert], list[Alert], dict[str, AlertState]]:
    """Apply hysteresis. Returns (active alerts, transitions to notify, new states).

    A rule fires after `fire_after` breaching runs in a row and resolves after `resolve_after`
    clear runs in a row; a transition (fired or resolved) is notified once per episode.
    """
    now = time.time() if now is None else now
    active: list[Alert] = []
    changed: list[Alert] = []
    new_states: dict[str, AlertState] = {}
    for c in conditions(summary, rules):
        prev = states.get(c.rule)
        st: AlertState = (
            prev.copy() if prev is not None else {"active": False, "streak": 0, "since": None}
        )
        if c.breached is not None:
            if c.breached != st["active"]:
                st["streak"] += 1
                needed = rules.fire_after if c.breached else rules.resolve_after
                if st["streak"] >= needed:
                    st["active"], st["streak"] = c.breached, 0
                    st["since"] = now if c.breached else None
                    changed.append(_alert(summary, c, "firing" if c.breached else "resolved", st))
            else:
                st["streak"] = 0
        new_states[c.rule] = st
        if st["active"]:
            active.append(_alert(summary, c, "firing", st))
    for rule, prev in states.items():  # not evaluated this run: kept as it was, never dropped
        if rule not in new_states:
            new_states[rule] = prev.copy()
            if prev["active"]:
                c = Condition(rule, None, None, None, f"{rule} still firing: not judged this run")
                active.append(_alert(summary, c, "firing", prev))
    return active, changed, new_states


def _alert(summary: MonitorSummary, c: Condition, status: AlertStatus, st: AlertState) -> Alert:
    return Alert(
        summary["model"],
        summary["version"],
        c.rule,
        status,
        c.severity,
        c.value,
        c.threshold,
        c.message,
        st["since"],
    )


AlertContext = dict[str, str | int]
"""What notifiers get beside the alerts: model, version, the retrain command, the report URL."""


class Notifier(Protocol):
    def send(self, alerts: list[Alert], context: AlertContext) -> None: ...


def notify_all(notifiers: list[Notifier], alerts: list[Alert], context: AlertContext) -> list[str]:
    """Send to every notifier; failures are logged and returned, never raised."""
    problems: list[str] = []
    if not alerts:
        return problems
    for n in notifiers:
        try:
            n.send(alerts, context)
        except Exception as exc:
            msg = f"{type(n).__name__}: {type(exc).__name__}: {exc}"[:300]
            log.error("notifier failed, the run goes on: %s", msg)
            problems.append(msg)
    return problems
