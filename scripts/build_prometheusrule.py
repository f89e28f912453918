"""Build k8s/base/prometheusrule.yaml from deploy/prometheus/rules.yml (the one source of rules).

python scripts/build_prometheusrule.py          # rewrite the PrometheusRule
python scripts/build_prometheusrule.py --check  # exit 1 when it is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "deploy/prometheus/rules.yml"
TARGET = ROOT / "k8s/base/prometheusrule.yaml"
HEADER = (
    "# GENERATED from deploy/prometheus/rules.yml by scripts/build_prometheusrule.py; do not edit\n"
)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as block scalars, as a person would write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    rules = yaml.safe_load(SOURCE.read_text())
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "servewatch", "labels": {"prometheus": "servewatch"}},
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=200)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not TARGET.is_file() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run python scripts/build_prometheusrule.py")
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
