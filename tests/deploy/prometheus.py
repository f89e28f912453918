"""A real Prometheus for the tests: Debian's server on a free port, its own TSDB, stopped by pid.

`shortened_rules` is the test copy of deploy/prometheus/rules.yml: the same alerts and
expressions, with every `for:` and every range `[Nm]` turned from minutes into seconds
(`seconds_per_minute` each), so that an alert fires and resolves within a test.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.service.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules.yml"
DASHBOARD = ROOT / "deploy/grafana/servewatch.json"
DURATION = re.compile(r"^(\d+)m$")
RANGE = re.compile(r"\[(\d+)m\]")


def shortened_rules(dest: Path, source: Path = RULES, seconds_per_minute: int = 2) -> Path:
    """Write the test copy of the rules to `dest`; only durations change."""

    def seconds(minutes: str) -> str:
        return f"{int(minutes) * seconds_per_minute}s"

    spec = yaml.safe_load(source.read_text())
    for group in spec["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                match = DURATION.match(str(rule["for"]))
                assert match, f"{rule.get('alert')}: for: {rule['for']} is not in minutes"
                rule["for"] = seconds(match.group(1))
            rule["expr"] = RANGE.sub(lambda m: f"[{seconds(m.group(1))}]", rule["expr"])
    dest.write_text(yaml.safe_dump(spec, sort_keys=False))
    return dest


def dashboard_queries(variables: dict[str, str], path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, expression) for every target of the Grafana dashboard, variables put in."""
    out = []
    for panel in json.loads(path.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in variables.items():
                expr = expr.replace(f"${name}", value)
            assert "$" not in expr, f"variable left in {expr!r}"
            out.append((panel["title"], expr))
    return out


class Prometheus:
    """`prometheus` scraping `targets` (host:port) every 2 s (a loaded machine may take over a
    second to answer), rules evaluated every second."""

    def __init__(self, binary: str, targets: list[str], rules: Path, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "2s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": "servewatch",
                    "scrape_timeout": "2s",
                    "static_configs": [{"targets": targets}],
                }
            ],
        }
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (folder / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.output()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus not ready in 30 s: {self.output()}")

    def api(self, path: str, **params: str) -> Any:
        res = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = res.json()
        assert res.status_code == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), data
        result: list[dict[str, Any]] = (
            data["result"] if data["resultType"] == "vector" else [{"value": data["result"]}]
        )
        return result

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def wait_for(self, what: str, check: Any, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(f"{what} not seen in {timeout:.0f} s; alerts: {self.alerts()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # our own child, by its pid
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
