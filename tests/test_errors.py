"""One error root: every exception the project defines derives from core.errors.ServewatchError."""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
import tomllib
from pathlib import Path
from types import ModuleType

from core.errors import ServewatchError

ROOT = Path(__file__).resolve().parent.parent


def project_packages() -> list[str]:
    """The packages pyproject.toml ships, so a new package is walked without editing this test."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return [name.rstrip("*") for name in include]


def module_names(root: Path, package: str) -> list[str]:
    """Every module of `package` under `root` (``__main__`` left out: importing it runs the CLI)."""
    names = []
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def classes_of(module: ModuleType) -> list[type]:
    """The classes `module` defines, those nested in its classes included."""
    found: list[type] = []
    todo = [c for c in vars(module).values() if inspect.isclass(c)]
    while todo:
        cls = todo.pop()
        if cls.__module__ != module.__name__ or cls in found:
            continue
        found.append(cls)
        todo.extend(c for c in vars(cls).values() if inspect.isclass(c))
    return found


def foreign_errors(modules: list[str]) -> list[str]:
    """The exceptions defined in `modules` that do not derive from ServewatchError."""
    wrong = []
    for name in modules:
        module = importlib.import_module(name)
        for cls in classes_of(module):
            if issubclass(cls, BaseException) and not issubclass(cls, ServewatchError):
                wrong.append(f"{name}.{cls.__qualname__}")
    return sorted(wrong)


def local_classes(path: Path) -> list[str]:
    """Classes defined inside functions: the walk above cannot see them, so none may exist."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found += [
                f"{path.name}:{inner.lineno} {inner.name}"
                for inner in ast.walk(node)
                if isinstance(inner, ast.ClassDef)
            ]
    return found


def test_every_project_exception_derives_from_servewatch_error() -> None:
    modules = [m for p in project_packages() for m in module_names(ROOT, p)]
    assert len(modules) > 100
    assert foreign_errors(modules) == []


def test_no_class_hides_inside_a_function() -> None:
    paths = [p for pkg in project_packages() for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert [c for p in paths for c in local_classes(p)] == []


def test_the_check_sees_an_exception_outside_the_root(tmp_path: Path) -> None:
    package = tmp_path / "rogue_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "bad.py").write_text(
        "from core.errors import ServewatchError\n"
        "class Good(ServewatchError):\n    pass\n"
        "class Bad(ValueError):\n    pass\n"
        "class Holder:\n    class Inner(Exception):\n        pass\n"
    )
    (package / "local.py").write_text("def f():\n    class Hidden(Exception):\n        pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        modules = module_names(tmp_path, "rogue_pkg")
        assert modules == ["rogue_pkg", "rogue_pkg.bad", "rogue_pkg.local"]
        assert foreign_errors(modules) == ["rogue_pkg.bad.Bad", "rogue_pkg.bad.Holder.Inner"]
        assert local_classes(package / "local.py") == ["local.py:2 Hidden"]
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("rogue_pkg")]:
            del sys.modules[name]


def test_the_service_errors_keep_their_status_codes_and_handlers() -> None:
    """Deriving from the root changed no class's status, code or intermediate class."""
    from predlog.logwriter import LogFull, LogUnavailable
    from service.errors import InvalidInstances, ProtocolError, ServiceError, Unavailable

    assert issubclass(InvalidInstances, ServiceError) and InvalidInstances.status_code == 422
    assert Unavailable.status_code == 503 and ServiceError.status_code == 500
    assert ProtocolError(404, "no model").status_code == 404
    assert issubclass(LogUnavailable, LogFull)


def test_first_line_quotes_one_stripped_line_within_its_limit() -> None:
    from core.errors import first_line

    assert first_line(ValueError("\n  bad value\nTraceback...")) == "bad value"
    assert first_line(ValueError("x" * 500)) == "x" * 200
    assert first_line(ValueError("x" * 500), None) == "x" * 500
    assert first_line(ValueError("y" * 50), 10) == "y" * 10
    assert first_line(KeyError()) == ""
    assert first_line(KeyError(), named=True) == "KeyError"
    assert first_line(OSError("  \n "), named=True) == "OSError"
