"""service/ in rooms: inference and protocols apart, no import circle, create_app a route table
(its functions' length: tests/test_architecture.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_the_compiled_trees_modules_import_each_other_one_way() -> None:
    inference = SERVICE / "inference"
    boosters = imports(inference / "compiled_boosters.py")
    assert not any(m.startswith("service.inference.compiled") and "boosters" not in m
                   for m in boosters)  # fmt: skip
    assert "service.inference.trees" in boosters
    assert "service.inference.trees" in imports(inference / "compiled.py")


def test_inference_knows_no_protocol() -> None:
    for path in (SERVICE / "inference").rglob("*.py"):
        wrong = {m for m in imports(path) if m.startswith(("service.protocols", "fastapi"))}
        assert wrong == set(), path


def test_create_app_is_a_route_table() -> None:
    tree = ast.parse((SERVICE / "main.py").read_text())
    (create,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "create_app"]
    assert (create.end_lineno or 0) - create.lineno < 60
