"""The import-layers contract between the engine (onnxslim/) and the passes (passes/).

import-linter cannot see this layout: `passes/` installs as `onnxslim.passes` through a
package-dir mapping, and grimp only walks the root package's folder. So the rules are checked
here on the source's AST (every import, lazy ones inside functions included):

1. The engine never imports a pass; it reaches passes only through `onnxslim.registry`'s table
   (module names as strings, imported with importlib).
2. Passes use the engine's public surface only: no `onnxslim._x`, no `onnxslim.<package>._x`
   (their own private modules `onnxslim.passes…._x` are theirs).
3. No import cycles between modules (package `__init__` re-exports excluded).

Exit code 1 and one line per violation when a rule is broken.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "onnxslim"
PASSES = ROOT / "passes"


def module_name(path: Path) -> str:
    if path.is_relative_to(PASSES):
        parts = ["onnxslim", "passes", *path.relative_to(PASSES).with_suffix("").parts]
    else:
        parts = ["onnxslim", *path.relative_to(ENGINE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def type_checking_only(tree: ast.Module) -> set[int]:
    """Lines of imports under `if TYPE_CHECKING:` (annotations only: no runtime edge)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for inner in ast.walk(child):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        lines.add(inner.lineno)
    return lines


def imports_of(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line, absolute module name, only for type checking) of every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    annotations_only = type_checking_only(tree)
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, node.lineno in annotations_only
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            typing_only = node.lineno in annotations_only
            yield node.lineno, target, typing_only
            for alias in node.names:
                # `from onnxslim.model import _probe` names a module too
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    yield node.lineno, f"{target}.{alias.name}", typing_only


def is_private_engine_module(name: str) -> bool:
    parts = name.split(".")
    if parts[0] != "onnxslim" or (len(parts) > 1 and parts[1] == "passes"):
        return False
    return any(part.startswith("_") and not part.startswith("__") for part in parts[1:])


def main() -> int:
    files = sorted([*ENGINE.rglob("*.py"), *PASSES.rglob("*.py")])
    known = {module_name(path): path for path in files}
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    for path in files:
        source = module_name(path)
        in_passes = path.is_relative_to(PASSES)
        where = path.relative_to(ROOT)
        for line, target, typing_only in imports_of(path):
            if not in_passes and (
                target == "onnxslim.passes" or target.startswith("onnxslim.passes.")
            ):
                problems.append(
                    f"{where}:{line}: the engine imports {target}; reach passes through onnxslim.registry"
                )
            if in_passes and is_private_engine_module(target):
                problems.append(
                    f"{where}:{line}: a pass imports the engine's private {target}; use its public module"
                )
            is_module = target in known and known[target].name != "__init__.py"
            if is_module and not typing_only and target != source and path.name != "__init__.py":
                graph.setdefault(source, set()).add(target)
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} import rule violation(s)")
        return 1
    print(f"import rules hold ({len(files)} modules)")
    return 0


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One representative cycle per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


if __name__ == "__main__":
    sys.exit(main())
