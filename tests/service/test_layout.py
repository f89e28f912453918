"""service/ in rooms: inference and protocols apart, no import circle, no function over 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"
LONGEST = 80


def long_functions(root: Path, longest: int = LONGEST) -> list[str]:
    """`path:line name (lines)` of every function or method longer than `longest` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > longest:
                    found.append(
                        f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({lines})"
                    )
    return found


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_no_function_in_the_service_is_over_80_lines() -> None:
    assert long_functions(SERVICE) == []


def test_the_length_check_sees_a_long_function(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(LONGEST))
    (tmp_path / "pkg" / "m.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}\n")
    assert long_functions(tmp_path / "pkg") == ["pkg/m.py:5 long (81)"]


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
