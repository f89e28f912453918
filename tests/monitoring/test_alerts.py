"""Alert rules are pure functions over a summary: hysteresis, episodes, notifier failures."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from monitoring.alerts import AlertRules, conditions, evaluate, load_rules, notify_all
from monitoring.notifiers import AlertmanagerNotifier, WebhookNotifier


def summary(
    share: float = 0.0,
    rows: int = 1000,
    realised: float | None = None,
    estimated: float | None = None,
    labelled: int = 500,
    metric: str = "accuracy",
    test_score: float = 0.80,
    reference_estimated: float | None = None,
) -> dict[str, Any]:
    return {
        "model": "m",
        "version": 1,
        "rows": rows,
        "labelled_rows": labelled,
        "metric": metric,
        "test_score": test_score,
        "drift": {"drifted_share": share, "columns": {"a": {"drifted": share > 0}}},
        "quality": {"missing_increase": {"a": 0.0}, "out_of_range_share": {"a": 0.0}},
        "performance": {
            "realised": {metric: realised} if realised is not None else None,
            "estimated": {metric: estimated} if estimated is not None else None,
            "realised_rows": labelled,
            "reference_estimated": (
                {metric: reference_estimated} if reference_estimated is not None else None
            ),
        },
    }


def active_rules(s: dict[str, Any], rules: AlertRules) -> set[str]:
    active, _, _ = evaluate(s, rules, {})
    return {a.rule for a in active}


@pytest.mark.parametrize(
    ("metric", "limit"),
    # rmse and mae are in the target's units: the allowed drop is a share (0.30 * 1.05)
    [("rmse", 0.315), ("mae", 0.315), ("log_loss", 0.35), ("brier", 0.35)],
)
def test_lower_is_better_metrics_alert_when_the_error_grows_not_when_it_shrinks(
    metric: str, limit: float
) -> None:
    rules = AlertRules(max_drop=0.05)
    worse = summary(realised=0.60, metric=metric, test_score=0.30)
    better = summary(realised=0.10, metric=metric, test_score=0.30)
    assert active_rules(worse, rules) == {"realised_performance"}
    assert active_rules(better, rules) == set()
    (cond,) = [c for c in conditions(worse, rules) if c.rule == "realised_performance"]
    assert cond.threshold == pytest.approx(limit) and "above" in cond.message


def test_a_performance_bound_is_a_ceiling_for_errors_and_a_floor_for_scores() -> None:
    ceiling = AlertRules(performance_floor=0.5, max_drop=10.0)
    assert active_rules(summary(realised=0.6, metric="rmse", test_score=0.3), ceiling) == {
        "realised_performance"
    }
    assert active_rules(summary(realised=0.4, metric="rmse", test_score=0.3), ceiling) == set()
    floor = AlertRules(performance_floor=0.75, max_drop=10.0)
    assert active_rules(summary(realised=0.7), floor) == {"realised_performance"}
    assert active_rules(summary(realised=0.8), floor) == set()


def test_unusable_labels_do_not_count_towards_the_labelled_minimum() -> None:
    rules = AlertRules(min_labelled_rows=100)
    assert active_rules(summary(realised=0.1, labelled=99), rules) == set()
    assert active_rules(summary(realised=0.1, labelled=100), rules) == {"realised_performance"}


def test_an_unknown_metric_in_the_rules_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown metric 'rsme'"):
        AlertRules(metric="rsme")


def test_each_rule_fires_on_its_condition() -> None:
    rules = AlertRules(drift_share=0.3, important_features=["a"], max_drop=0.05)
    assert active_rules(summary(), rules) == set()
    assert active_rules(summary(share=0.5), rules) == {"dataset_drift", "feature_drift"}
    assert active_rules(summary(realised=0.70), rules) == {"realised_performance"}
    assert active_rules(summary(estimated=0.70), rules) == {"estimated_performance"}
    assert active_rules(summary(realised=0.78, estimated=0.78), rules) == set()
    assert active_rules(summary(rows=10), rules) == {"insufficient_data"}
    floor = AlertRules(performance_floor=0.9)
    assert active_rules(summary(realised=0.85), floor) == {"realised_performance"}


def test_the_estimate_is_judged_against_the_same_estimate_on_the_reference() -> None:
    """An under-confident model estimates 0.70 on the reference whose test score is 0.80: the same
    0.70 on the traffic is no drop; a fall from the reference's estimate is, whatever the test
    score; and without a reference estimate the test score is the baseline."""
    rules = AlertRules(max_drop=0.05)
    assert active_rules(summary(estimated=0.70, reference_estimated=0.70), rules) == set()
    assert active_rules(summary(estimated=0.64, reference_estimated=0.70), rules) == {
        "estimated_performance"
    }
    over = summary(estimated=0.86, reference_estimated=0.95)  # over-confident: above the test
    assert active_rules(over, rules) == {"estimated_performance"}
    verdict = {c.rule: c for c in conditions(over, rules)}["estimated_performance"]
    assert verdict.threshold == pytest.approx(0.90)
    assert "estimate on the reference sample 0.950" in verdict.message
    assert active_rules(summary(estimated=0.70, reference_estimated=float("nan")), rules) == {
        "estimated_performance"
    }
    # the realised score is still judged against the test score
    assert active_rules(summary(realised=0.70, reference_estimated=0.70), rules) == {
        "realised_performance"
    }


def test_realised_performance_is_judged_against_the_baseline_on_unseen_rows() -> None:
    """A version carrying `baseline` (its score on test and out-of-fold rows) is judged against
    it, not against the test score; without one, against the test score."""
    rules = AlertRules(max_drop=0.05)
    on_test = summary(realised=0.78, test_score=0.80)
    assert active_rules(on_test, rules) == set()  # 0.02 below the test score
    with_baseline = {**on_test, "baseline": {"score": 0.85, "rows": 30_000, "drawn_from": "x"}}
    assert active_rules(with_baseline, rules) == {"realised_performance"}
    verdict = {c.rule: c for c in conditions(with_baseline, rules)}["realised_performance"]
    assert verdict.threshold == pytest.approx(0.80)
    assert "score on 30,000 unseen rows 0.850" in verdict.message
    # the estimate keeps its own baseline (the same estimate on the reference sample)
    estimated = {
        **summary(estimated=0.78, reference_estimated=0.80),
        "baseline": {"score": 0.85, "rows": 30_000, "drawn_from": "x"},
    }
    assert active_rules(estimated, rules) == set()


def test_realised_performance_needs_enough_labels() -> None:
    verdicts = {c.rule: c for c in conditions(summary(realised=0.1, labelled=5), AlertRules())}
    assert verdicts["realised_performance"].breached is None


def test_hysteresis_fires_once_per_episode_and_resolves_after_clear_runs() -> None:
    rules = AlertRules(drift_share=0.3, fire_after=2, resolve_after=2)
    states: dict[str, dict[str, Any]] = {}
    timeline = [0.5, 0.5, 0.5, 0.1, 0.5, 0.1, 0.1, 0.1]
    fired, resolved, active_after = [], [], []
    for i, share in enumerate(timeline):
        active, changed, states = evaluate(summary(share=share), rules, states, now=float(i))
        fired += [i for a in changed if a.rule == "dataset_drift" and a.status == "firing"]
        resolved += [i for a in changed if a.rule == "dataset_drift" and a.status == "resolved"]
        active_after.append(any(a.rule == "dataset_drift" for a in active))
    assert fired == [1]  # needed two breaching runs; notified once despite staying high
    assert resolved == [6]  # one clear run (3) was not enough; two in a row (5, 6) were
    assert active_after == [False, True, True, True, True, True, False, False]


def test_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("drift_share: 0.2\nimportant_features: [a]\n")
    assert load_rules(path).drift_share == 0.2
    path.write_text("drift_shaer: 0.2\n")
    with pytest.raises(ValueError, match="drift_shaer"):
        load_rules(path)


class Recorder(BaseHTTPRequestHandler):
    fail_first = 0
    received: list[Any] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if Recorder.fail_first > 0:
            Recorder.fail_first -= 1
            self.send_response(503)
        else:
            Recorder.received.append((self.path, body))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Any:
    Recorder.received = []
    Recorder.fail_first = 0
    server = HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def firing() -> list[Any]:
    _, changed, _ = evaluate(summary(share=0.9), AlertRules(), {})
    return changed


def test_webhook_retries_with_backoff_then_delivers(receiver: str) -> None:
    Recorder.fail_first = 2
    WebhookNotifier(receiver, backoff_s=0.01).send(firing(), {"model": "m", "retrain": "cmd"})
    ((path, body),) = Recorder.received
    assert body["alerts"][0]["rule"] == "dataset_drift" and body["retrain"] == "cmd"


def test_alertmanager_payload(receiver: str) -> None:
    AlertmanagerNotifier(receiver, backoff_s=0.01).send(firing(), {"retrain": "cmd"})
    ((path, body),) = Recorder.received
    assert path == "/api/v2/alerts"
    alert = body[0]
    assert alert["labels"]["alertname"] == "servewatch_dataset_drift"
    assert alert["labels"]["model"] == "m" and alert["labels"]["severity"] == "warning"
    assert (
        alert["annotations"]["retrain"] == "cmd" and "startsAt" in alert and "endsAt" not in alert
    )


def test_a_notifier_that_is_down_never_breaks_the_run() -> None:
    dead = WebhookNotifier("http://127.0.0.1:1/hook", attempts=2, backoff_s=0.01, timeout_s=0.5)
    problems = notify_all([dead], firing(), {})
    assert len(problems) == 1 and "WebhookNotifier" in problems[0]


class Slow(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        import time

        time.sleep(2.0)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def test_a_slow_notifier_is_cut_off_by_its_timeout() -> None:
    server = HTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        slow = WebhookNotifier(
            f"http://127.0.0.1:{server.server_address[1]}",
            timeout_s=0.2,
            attempts=2,
            backoff_s=0.01,
        )
        problems = notify_all([slow], firing(), {})
    finally:
        server.shutdown()
    assert len(problems) == 1 and "Timeout" in problems[0]


def test_an_alert_as_json_has_exactly_the_alert_records_keys_in_order() -> None:
    """One record: `Alert`'s fields are `AlertDict`'s keys (the summary's and notifiers' JSON)."""
    from dataclasses import fields

    from monitoring.alerts import Alert
    from monitoring.summary import AlertDict

    assert [f.name for f in fields(Alert)] == list(AlertDict.__annotations__)
    alert = Alert("m", 2, "dataset_drift", "firing", "critical", 0.5, 0.3, "drifted", 1.0)
    assert alert.as_dict() == {
        "model": "m", "version": 2, "rule": "dataset_drift", "status": "firing",
        "severity": "critical", "value": 0.5, "threshold": 0.3, "message": "drifted", "since": 1.0,
    }  # fmt: skip
