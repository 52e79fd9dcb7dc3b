"""Module and function sizes in onnxslim/ and passes/: a guide (500 lines a module, 80 a function).

Prints every module and function over the guide. Exit code 1 when one is over it and not in
KEPT below, where each exception says why it stays.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE_LINES = 500
FUNCTION_LINES = 80

# path or path::qualified.function -> why it is kept over the guide
KEPT: dict[str, str] = {
    "onnxslim/benchmark/_benchmark.py::benchmark": "its public signature is 20 keyword options "
    "(21 lines); the body is about 60 lines naming the stages",
}


def functions(tree: ast.Module) -> list[tuple[str, int]]:
    """(qualified name, lines without the docstring) of every function, nested ones included."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                first = child.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    lines -= (first.end_lineno or first.lineno) - first.lineno + 1
                found.append((name, lines))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return found


def main() -> int:
    over: list[str] = []
    for path in sorted(
        [*ROOT.joinpath("onnxslim").rglob("*.py"), *ROOT.joinpath("passes").rglob("*.py")]
    ):
        where = str(path.relative_to(ROOT))
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n") + 1
        if lines > MODULE_LINES:
            over.append(f"{where}: {lines} lines")
        for name, count in functions(ast.parse(text)):
            if count > FUNCTION_LINES:
                over.append(f"{where}::{name}: {count} lines")
    unexplained = []
    for entry in over:
        key = entry.rsplit(":", 1)[0]
        reason = KEPT.get(key)
        print(f"{entry}" + (f" (kept: {reason})" if reason else ""))
        if reason is None:
            unexplained.append(entry)
    if unexplained:
        print(f"{len(unexplained)} over the size guide without a reason in .ci/sizes.py")
        return 1
    print("sizes within the guide (or kept with a reason)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
