"""The package layering, read from the source's own imports (ast, every import, lazy ones and
those for type checking too):

- nothing outside `reclaim.runtimes` imports a concrete adapter (`reclaim.runtimes.docker`):
  the registry is the one way in;
- fsck never imports runtimes, and ondisk imports neither runtimes nor fsck;
- no import cycle between the packages;
- docker-py is no dependency of reclaim's own code.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src"
ADAPTERS = ("reclaim.runtimes.docker",)
# The one module outside an adapter's package that may import it: the registry, which picks
# the adapter.
REGISTRY = "reclaim.runtimes.registry"
ADAPTER_IMPORT_EXCEPTIONS: set[str] = set()
# Modules under src/ that are not reclaim's own code (none: the sandbox is a top-level folder).
NOT_RECLAIM: tuple[str, ...] = ()
PACKAGES = ("reclaim.runtimes", "reclaim.fsck", "reclaim.ondisk", "reclaim.transport",
            "reclaim.state", "reclaim.policy")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = SOURCE.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(path: Path, module: str) -> Iterator[str]:
    """Every module `module` (the file at `path`) imports, by its absolute name."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            # `from package import module` imports the module.
            yield from (f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}"))


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(SOURCE.joinpath("reclaim").rglob("*.py")):
        module = _module_name(path)
        if any(_within(module, other) for other in NOT_RECLAIM):
            continue
        graph[module] = set(_imports(path, module))
    return graph


GRAPH = _graph()


def test_the_walk_sees_the_packages() -> None:
    assert "reclaim.runtimes.docker.adapter" in GRAPH
    assert "reclaim.ondisk.digests" in GRAPH["reclaim.runtimes.docker.disk"]
    assert "reclaim.transport" in GRAPH["reclaim.runtimes.docker.adapter"]
    assert {p for p in PACKAGES if p in GRAPH} == set(PACKAGES)


def test_no_module_outside_runtimes_imports_a_concrete_adapter() -> None:
    wrong = sorted(
        f"{module} imports {name}"
        for module, names in GRAPH.items()
        for name in names
        for adapter in ADAPTERS
        if _within(name, adapter) and not _within(module, adapter)
        and module != REGISTRY and module not in ADAPTER_IMPORT_EXCEPTIONS
    )
    assert wrong == []


def test_the_adapter_import_exceptions_are_still_needed() -> None:
    """An exception that no longer imports an adapter is taken off the list."""
    for module in ADAPTER_IMPORT_EXCEPTIONS:
        assert any(_within(n, a) for n in GRAPH.get(module, ()) for a in ADAPTERS), module


@pytest.mark.parametrize("package, forbidden", [
    ("reclaim.fsck", ("reclaim.runtimes",)),
    ("reclaim.ondisk", ("reclaim.runtimes", "reclaim.fsck")),
    ("reclaim.transport", ("reclaim.runtimes", "reclaim.fsck")),
])
def test_layers_import_only_downwards(package: str, forbidden: tuple[str, ...]) -> None:
    wrong = sorted(f"{module} imports {name}" for module, names in GRAPH.items()
                   if _within(module, package)
                   for name in names if any(_within(name, f) for f in forbidden))
    assert wrong == []


def _package_of(name: str) -> str | None:
    return next((p for p in PACKAGES if _within(name, p)), None)


def test_no_import_cycle_between_the_packages() -> None:
    edges: dict[str, set[str]] = {p: set() for p in PACKAGES}
    why: dict[tuple[str, str], str] = {}
    for module, names in GRAPH.items():
        source = _package_of(module)
        for name in names:
            target = _package_of(name)
            if source and target and source != target:
                edges[source].add(target)
                why.setdefault((source, target), f"{module} imports {name}")
    cycles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(edges[node]):
            if nxt in path:
                loop = [*path[path.index(nxt):], nxt]
                cycles.append(" -> ".join(
                    f"{a} ({why[(a, b)]})" for a, b in pairwise(loop)))
            else:
                visit(nxt, [*path, nxt])

    for package in PACKAGES:
        visit(package, [package])
    assert cycles == []


def test_reclaim_does_not_import_docker_py() -> None:
    wrong = sorted(f"{module} imports {name}" for module, names in GRAPH.items()
                   for name in names if _within(name, "docker"))
    assert wrong == []
