"""CanaryGuard: compares the canary with production (errors, latency); stops it when worse."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from service import metrics

log = logging.getLogger("servewatch.canary")


@dataclass(frozen=True)
class CanaryLimits:
    min_requests: int = 50
    """Requests on each side before the canary is judged."""
    max_error_rate_increase: float = 0.02
    """Stop when the canary's 5xx share exceeds production's by more than this."""
    max_latency_ratio: float = 2.0
    """Stop when the canary's mean latency exceeds production's by this factor."""


@dataclass
class _Side:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def mean_s(self) -> float:
        return self.seconds / self.requests if self.requests else 0.0


@dataclass
class CanaryGuard:
    model: str
    version: int
    limits: CanaryLimits
    production: _Side = field(default_factory=_Side)
    canary: _Side = field(default_factory=_Side)
    stopped: bool = False
    reason: str | None = None

    def record(self, *, is_canary: bool, status: int, seconds: float) -> None:
        side = self.canary if is_canary else self.production
        side.requests += 1
        side.errors += status >= 500
        side.seconds += seconds
        if not self.stopped:
            self._judge()

    def _judge(self) -> None:
        lim, c, p = self.limits, self.canary, self.production
        if c.requests < lim.min_requests or p.requests < lim.min_requests:
            return
        reason = None
        if c.error_rate > p.error_rate + lim.max_error_rate_increase:
            reason = f"error rate {c.error_rate:.1%} vs production {p.error_rate:.1%}"
        elif p.mean_s > 0 and c.mean_s > lim.max_latency_ratio * p.mean_s:
            reason = f"mean latency {c.mean_s * 1000:.1f} ms vs production {p.mean_s * 1000:.1f} ms"
        if reason:
            self.stopped, self.reason = True, reason
            log.error("canary %s v%s rolled back: %s", self.model, self.version, reason)
            kind = "errors" if reason.startswith("error") else "latency"
            metrics.CANARY_ROLLBACKS.labels(self.model, str(self.version), kind).inc()
            metrics.STAGING_INFO.labels(self.model, str(self.version)).set(0)
