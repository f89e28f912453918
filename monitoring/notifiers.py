"""Notifiers: a generic JSON webhook and the Alertmanager v2 API, with bounded retries."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from monitoring.alerts import Alert

log = logging.getLogger("servewatch.notify")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _HttpNotifier:
    def __init__(
        self, url: str, *, timeout_s: float = 5.0, attempts: int = 3, backoff_s: float = 0.5
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s

    def _post(self, payload: Any) -> None:
        """POST with exponential back-off; raises the last error after `attempts` tries."""
        last: Exception | None = None
        for attempt in range(self.attempts):
            try:
                res = httpx.post(self.url, json=payload, timeout=self.timeout_s)
                if res.status_code < 300:
                    return
                last = RuntimeError(f"HTTP {res.status_code} from {self.url}")
                if res.status_code < 500 and res.status_code != 429:
                    break  # a client error will not get better by retrying
            except httpx.HTTPError as exc:
                last = exc
            if attempt + 1 < self.attempts:
                time.sleep(self.backoff_s * 2**attempt)
        assert last is not None
        raise last


class WebhookNotifier(_HttpNotifier):
    """POSTs {"model", "version", "alerts": [...], "retrain": "..."} as JSON."""

    def send(self, alerts: list[Alert], context: dict[str, Any]) -> None:
        self._post({"source": "servewatch", **context, "alerts": [a.as_dict() for a in alerts]})


class AlertmanagerNotifier(_HttpNotifier):
    """POSTs to Alertmanager's /api/v2/alerts; resolved alerts carry endsAt = now."""

    def __init__(self, base_url: str, **kw: Any) -> None:
        super().__init__(base_url.rstrip("/") + "/api/v2/alerts", **kw)

    def send(self, alerts: list[Alert], context: dict[str, Any]) -> None:
        now = time.time()
        payload = []
        for a in alerts:
            item: dict[str, Any] = {
                "labels": {
                    "alertname": f"servewatch_{a.rule}",
                    "service": "servewatch",
                    "model": a.model,
                    "version": str(a.version),
                    "severity": a.severity,
                },
                "annotations": {
                    "summary": a.message,
                    "description": f"{a.rule} on {a.model} v{a.version}: {a.message}",
                    "retrain": context.get("retrain", ""),
                },
                "startsAt": _iso(a.since or now),
            }
            if context.get("report_url"):
                item["generatorURL"] = context["report_url"]
            if a.status == "resolved":
                item["endsAt"] = _iso(now)
            payload.append(item)
        self._post(payload)
