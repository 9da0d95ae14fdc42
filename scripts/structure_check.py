#!/usr/bin/env python3
"""The package's shape rules (ARCHITECTURE.md): exits 1 and names each breach.

- no function's cyclomatic complexity (radon) is above 15;
- no function is longer than 60 lines (argument parsers, which are one call per option, too);
- no module imports a private name (``_x``) from another module of the package.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from radon.complexity import cc_visit

MAX_COMPLEXITY = 15
MAX_LINES = 60
ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vobiz_async"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def breaches(path: Path) -> list[str]:
    source = path.read_text()
    where = path.relative_to(ROOT)
    found = []
    complex_ = {
        (item.lineno, item.fullname, item.complexity)
        for block in cc_visit(source)
        for item in [block, *getattr(block, "methods", [])]
        if item.complexity > MAX_COMPLEXITY
    }
    for lineno, name, complexity in sorted(complex_):
        found.append(f"{where}:{lineno}: {name} complexity {complexity}")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_LINES:
                found.append(f"{where}:{node.lineno}: {node.name} is {length} lines")
        elif isinstance(node, ast.ImportFrom):
            internal = node.level > 0 or (node.module or "").startswith("vobiz_async")
            for alias in node.names if internal else ():
                if _is_private(alias.name):
                    found.append(f"{where}:{node.lineno}: imports private {alias.name}")
    return found


def main() -> int:
    found = [line for path in sorted(PACKAGE.rglob("*.py")) for line in breaches(path)]
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
