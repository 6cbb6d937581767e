"""The wheel holds reclaim alone: the sandbox, the tests and the benchmarks stay in the
repository, and reclaim imports none of them, so that `pip install .` installs the product."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path
from typing import Any

import setuptools

ROOT = Path(__file__).resolve().parents[2]
# Top-level packages of the repository that are not the product.
REPOSITORY_ONLY = ("sandbox", "tests", "bench")


def packaged() -> list[str]:
    """The packages setuptools puts in the wheel, found as pyproject.toml's
    `[tool.setuptools.packages.find]` asks (namespace packages too unless it says otherwise)."""
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    find = project["tool"]["setuptools"]["packages"]["find"]
    finder = (
        setuptools.find_namespace_packages
        if find.get("namespaces", True)
        else setuptools.find_packages
    )
    found: list[str] = []
    for where in find.get("where", ["."]):
        found += finder(
            where=str(ROOT / where),
            include=find.get("include", ["*"]),
            exclude=find.get("exclude", []),
        )
    return found


def imported(path: Path) -> set[str]:
    """Every absolute module name a source file imports, wherever the import statement is."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def is_repository_only(module: str) -> bool:
    parts = module.split(".")
    return parts[0] in REPOSITORY_ONLY or parts[:2] == ["reclaim", "sandbox"]


def test_the_wheel_holds_reclaim_and_nothing_else() -> None:
    found = packaged()
    # The discovery itself works: the product and its subpackages are there.
    assert {"reclaim", "reclaim.policy", "reclaim.runtimes"} <= set(found)
    assert [p for p in found if p.split(".")[0] != "reclaim" or is_repository_only(p)] == []


def test_the_sandbox_is_a_package_of_the_repository() -> None:
    assert (ROOT / "sandbox" / "__init__.py").is_file()
    assert not (ROOT / "src" / "reclaim" / "sandbox").exists()


def test_reclaim_imports_nothing_that_stays_in_the_repository() -> None:
    sources = sorted((ROOT / "src" / "reclaim").rglob("*.py"))
    assert len(sources) > 10
    offending = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in sources
        for name in imported(path)
        if is_repository_only(name)
    )
    assert offending == []
