"""Each package names its public surface in `__all__`, the modules the others import included."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = [
    name.rstrip("*")
    for name in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
]


def declared(root: Path, package: str) -> list[str] | None:
    """The names `package/__init__.py` puts in `__all__`, or None without one."""
    tree = ast.parse((root / package / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            return [str(v) for v in value]
    return None


def used_from_outside(root: Path, packages: list[str], package: str) -> set[str]:
    """The modules of `package` that the other packages import."""
    used = set()
    for other in packages:
        if other == package:
            continue
        for path in (root / other).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                else:
                    continue
                for name in names:
                    parts = name.split(".")
                    if (
                        parts[0] == package
                        and len(parts) > 1
                        and is_module(root, package, parts[1])
                    ):
                        used.add(parts[1])
    return used


def defined_in_init(root: Path, package: str) -> set[str]:
    """The names `package/__init__.py` binds (imports included)."""
    found = set()
    for node in ast.parse((root / package / "__init__.py").read_text()).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            found.add(node.name)
        elif isinstance(node, ast.Assign):
            found |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return found


def is_module(root: Path, package: str, name: str) -> bool:
    return (root / package / f"{name}.py").is_file() or (root / package / name).is_dir()


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_names_what_the_others_import(package: str) -> None:
    names = declared(ROOT, package)
    assert names is not None, f"{package}/__init__.py has no __all__"
    bound = defined_in_init(ROOT, package)
    assert [n for n in names if not is_module(ROOT, package, n) and n not in bound] == []
    assert len(names) == len(set(names))
    assert sorted(used_from_outside(ROOT, PACKAGES, package) - set(names)) == []


def test_the_check_sees_an_import_past_the_surface(tmp_path: Path) -> None:
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "__init__.py").write_text('__all__ = ["api"]\n')
    (tmp_path / "inner" / "api.py").write_text("")
    (tmp_path / "inner" / "private.py").write_text("")
    (tmp_path / "outer").mkdir()
    (tmp_path / "outer" / "__init__.py").write_text("")
    (tmp_path / "outer" / "use.py").write_text(
        "from inner import api\nfrom inner.private import thing\nimport inner.nothing\n"
    )
    assert declared(tmp_path, "inner") == ["api"]
    assert declared(tmp_path, "outer") is None
    assert used_from_outside(tmp_path, ["inner", "outer"], "inner") == {"api", "private"}
