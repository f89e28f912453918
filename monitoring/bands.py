"""The noise bands beside the figures they bound, as plain tables for the HTML report."""

from __future__ import annotations

from dataclasses import dataclass

from monitoring import alerts as alerting
from monitoring.summary import MonitorSummary, NoiseBand


@dataclass(frozen=True)
class Table:
    """A report section of servewatch's own: a note above a table of text cells."""

    title: str
    note: str
    headers: list[str]
    rows: list[list[str]]


def _figure(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.4g}"


def _band(band: NoiseBand | None, metric: str) -> str:
    width = band["widths"].get(metric) if band else None
    if band is None or width is None:
        return "n/a"
    return f"{width:.3g} worse at most ({band['rows']:,} rows)"


def tables(summary: MonitorSummary, rules: alerting.AlertRules) -> list[Table]:
    """The performance figures with their noise bands and the verdict of each performance rule,
    and explanation drift per feature with its band."""
    out: list[Table] = []
    performance = summary.get("performance")
    noise = performance.get("noise") if performance else None
    if performance and noise:
        realised = performance.get("realised") or {}
        estimated = performance.get("estimated") or {}
        on_reference = performance.get("reference_estimated") or {}
        names = list(dict.fromkeys([*realised, *estimated]))
        rows = [
            [
                name,
                _figure(realised.get(name)),
                _band(noise["realised"], name),
                _figure(estimated.get(name)),
                _figure(on_reference.get(name)),
                _band(noise["estimated"], name),
            ]
            for name in names
        ]
        said = {True: "BREACHED", False: "ok", None: "not judged"}
        verdicts = [
            f"{c.rule}: {said[c.breached]} ({c.message})"
            for c in alerting.conditions(summary, rules)
            if c.rule in ("realised_performance", "estimated_performance")
        ]
        baseline = summary.get("baseline")
        unseen = (
            f", realised baseline {_figure(baseline['score'])} on {baseline['rows']:,} unseen rows "
            f"({baseline['drawn_from']})"
            if baseline
            else ""
        )
        note = (
            f"Noise band: how much worse than its baseline a healthy window of this many rows "
            f"scores by chance at {noise['confidence']:.0%} ({noise['note']}). Watched metric "
            f"{summary.get('metric')}, test score {_figure(summary.get('test_score'))}{unseen}; "
            "a rule breaches on a drop beyond its band whose upper bound (drop + band) reaches "
            f"max_drop ({rules.max_drop:g}). " + "; ".join(verdicts)
        )
        headers = [
            "metric",
            "realised",
            "realised noise band",
            "estimated",
            "estimated on the reference",
            "estimated noise band",
        ]
        out.append(Table("Performance with its noise bands", note, headers, rows))
    explanation = summary.get("explanation_drift")
    if explanation:
        rows = [
            [
                name,
                _figure(f.get("reference")),
                _figure(f.get("current")),
                _figure(f.get("change")),
                _figure(f.get("band")),
            ]
            for name, f in explanation["features"].items()
        ]
        note = (
            f"Mean |contribution| per feature ({explanation['method']}); the noise band is how far "
            f"the change strays by chance at {rules.confidence:.0%} over all features. "
            f"explanation_drift fires when a change is beyond its band and above "
            f"{rules.explanation_change:.0%} of the reference value."
        )
        headers = ["feature", "reference", "window", "change", "noise band"]
        out.append(Table("Explanation drift with its noise bands", note, headers, rows))
    return out
