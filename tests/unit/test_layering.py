"""The package's layering, checked over the source (no imports run).

- Adapters import the seam and the core below it, never the facade, the worker, the CLI or
  ``testing``.
- ``amqp1q.testing`` reaches the Proton engine only through ``amqp1q.adapters.proton.wire`` and
  otherwise uses public names.
- Module-level imports form no cycle.
- The facade asks adapters only what ``_adapter.py`` declares: no ``getattr``/``hasattr`` probe of
  an adapter or backend.
- No module reaches into a private member (``obj._name``) that another module defines.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

SRC = pathlib.Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "amqp1q"

#: Modules above the seam: an adapter importing one of these would import upward.
FACADE = (
    "amqp1q",
    "amqp1q._queue",
    "amqp1q._queuelife",
    "amqp1q._sending",
    "amqp1q._client",
    "amqp1q._consumer",
    "amqp1q._settling",
    "amqp1q._calls",
    "amqp1q._groups",
    "amqp1q._received",
    "amqp1q._push",
    "amqp1q._operations",
    "amqp1q._runner",
    "amqp1q._registry",
    "amqp1q._middleware",
    "amqp1q.worker",
    "amqp1q.cli",
    "amqp1q.integrations",
    "amqp1q.dashboard",
    "amqp1q.testing",
)
#: Private members of third-party objects: python-qpid-proton's cffi handles (the engine drives
#: them), typing's alias name, and the azure-servicebus handler's running flag.
FOREIGN_PRIVATE = {"_impl", "_name", "_running"}


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module.split(".")
    if MODULES[module].name != "__init__.py":
        base = base[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, *([node.module] if node.module else [])])
    else:
        target = node.module or ""
    named = (f"{target}.{alias.name}" for alias in node.names)
    return [target, *(name for name in named if name in MODULES)]


def _imports(module: str, top_level_only: bool = False) -> Iterator[tuple[str, ast.AST]]:
    tree = TREES[module]
    nodes = _top_level(tree.body) if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in _targets(module, node):
                if target.split(".")[0] == "amqp1q":
                    yield target, node


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run at import: not function bodies, not ``if TYPE_CHECKING:`` blocks."""
    for statement in body:
        if isinstance(statement, ast.If) and "TYPE_CHECKING" in ast.unparse(statement.test):
            yield from _top_level(statement.orelse)
        elif isinstance(statement, (ast.If, ast.Try)):
            yield from _top_level(statement.body)
            yield from _top_level(statement.orelse)
            if isinstance(statement, ast.Try):
                for handler in statement.handlers:
                    yield from _top_level(handler.body)
                yield from _top_level(statement.finalbody)
        elif not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield statement


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_adapters_import_only_the_seam_and_the_core() -> None:
    upward = [
        f"{module} imports {target}"
        for module in MODULES
        if _within(module, "amqp1q.adapters")
        for target, _ in _imports(module)
        if any(
            target == facade or _within(target, facade) for facade in FACADE if facade != "amqp1q"
        )
        or target == "amqp1q"
    ]
    assert upward == []


def test_testing_uses_public_names_and_the_wire_module() -> None:
    private = []
    for module in MODULES:
        if not _within(module, "amqp1q.testing"):
            continue
        for target, node in _imports(module):
            if _within(target, "amqp1q.testing") or target == "amqp1q.adapters.proton.wire":
                continue
            names = [alias.name for alias in node.names] if isinstance(node, ast.ImportFrom) else []
            if any(part.startswith("_") for part in target.split(".")) or any(
                name.startswith("_") and not name.startswith("__") for name in names
            ):
                private.append(f"{module} imports {target} {names}")
    assert private == []


def test_module_level_imports_form_no_cycle() -> None:
    graph = {
        module: {target for target, _ in _imports(module, top_level_only=True) if target in MODULES}
        for module in MODULES
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if _within(module, target):
                continue  # a submodule importing its own package's __init__
            if state.get(target) == 1:
                cycles.append(
                    [*path[path.index(target) :], target] if target in path else [module, target]
                )
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in MODULES:
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_facade_does_not_probe_adapters() -> None:
    probes = [
        f"{module}:{node.lineno}: {ast.unparse(node)}"
        for module, tree in TREES.items()
        if not (_within(module, "amqp1q.adapters") or _within(module, "amqp1q.testing"))
        for node in ast.walk(tree)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and node.args
            and any(word in ast.unparse(node.args[0]) for word in ("adapter", "backend"))
        )
    ]
    assert probes == []


def _defined_private_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if name.startswith("_")}


def test_no_module_reaches_into_another_modules_private_members() -> None:
    reaches = []
    for module, tree in TREES.items():
        own = _defined_private_names(tree) | FOREIGN_PRIVATE
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            name = node.attr
            if not name.startswith("_") or name.startswith("__") or name in own:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            reaches.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert reaches == []
