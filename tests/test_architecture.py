"""The import table of docs/architecture.md, checked on the source so it cannot drift."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "predlog", "training", "service", "monitoring", "servewatch")
# package -> the project packages it may import (docs/architecture.md, "Data flow and packages")
ALLOWED = {
    "core": set(),
    "predlog": {"core"},
    "training": {"core"},
    "service": {"core", "predlog"},
    "monitoring": {"core", "predlog", "service"},
    "servewatch": {"core", "predlog", "training", "service", "monitoring"},
}


def imported_packages(path: Path) -> set[str]:
    """The project packages a module imports, at top level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names} & set(PACKAGES)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_what_the_architecture_allows(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package] - {package})
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {k: v for k, v in wrong.items() if v} == {}


def test_the_check_sees_an_import_against_the_direction(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from training.registry import Registry\n")
    assert imported_packages(module) == {"training"}


def test_a_version_published_before_core_existed_still_loads_and_answers() -> None:
    """Its pickle refers to training.transformers (the fitted clipper and timestamp parts), as
    every version published before the move does."""
    import zlib

    from core.registry import Registry
    from service.inference.model import LoadedModel

    fixture = ROOT / "tests/fixtures/registry-pre-core"
    raw = zlib.decompressobj().decompress((fixture / "legacy/1/model.joblib").read_bytes())
    assert b"training.transformers" in raw and b"core.transformers" not in raw
    model = LoadedModel.load(Registry(fixture), "legacy", 1)
    out = model.predict_columns(
        {
            "x1": [0.5],
            "x2": [3.0],
            "color": ["red"],
            "group": ["a"],
            "when": ["2024-02-01T10:00:00"],
        }
    )
    assert out.predictions[0] in ("yes", "no") and out.probabilities is not None


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_goes_into_the_image(package: str) -> None:
    """The build context lets it in (.dockerignore) and the Dockerfile copies it: a new package
    missing from either fails the image build in CI (predlog/ did)."""
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert f"!{package}/" in ignore
    assert f"COPY {package} ./{package}" in (ROOT / "Dockerfile").read_text()


@pytest.mark.parametrize("package", ["monitoring", "predlog", "service", "servewatch"])
def test_no_function_is_longer_than_80_lines(package: str) -> None:
    """Issue 29, by the check tests/training/test_short_functions.py runs on training/ and core/."""
    from tests.training.test_short_functions import long_functions

    found: dict[str, int] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        found |= long_functions(path, ROOT)
    assert found == {}
