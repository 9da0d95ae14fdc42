#!/usr/bin/env python3
"""The package's shape rules (ARCHITECTURE.md): exits 1 and names each breach.

- no function's cyclomatic complexity (radon) is above 15;
- no function is longer than 60 lines (argument parsers, which are one call per option, too);
- no module imports a private name (``_x``) from another module of the package;
- no module reads another's private attributes: ``obj._x`` is flagged unless ``_x`` is
  defined in the same module (a def, a class, an assignment or annotation, an argument, an
  import), so a module touches only the private names it owns.
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


def _defined_names(tree: ast.AST) -> set[str]:
    """Every name a module defines: defs, classes, arguments, assignment and annotation
    targets (names and attributes, such as ``self._x = ...``) and import aliases."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.rpartition(".")[2])
    return names


def _outside_modules(tree: ast.AST) -> set[str]:
    """Names bound by `import x` of a module outside the package (`hashlib`, `zlib`): their
    private names (`hashlib._Hash` in an annotation) are not another module's of ours."""
    return {
        (alias.asname or alias.name).partition(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if not alias.name.startswith("vobiz_async")
    }


def foreign_private_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """`(line, name)` of each `obj._name` read whose `_name` this module does not define."""
    defined = _defined_names(tree)
    outside = _outside_modules(tree)
    return sorted(
        (node.lineno, node.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and _is_private(node.attr)
        and node.attr not in defined
        and not (isinstance(node.value, ast.Name) and node.value.id in outside)
    )


def breaches(path: Path, *, root: Path = ROOT) -> list[str]:
    source = path.read_text()
    where = path.relative_to(root)
    found = []
    complex_ = {
        (item.lineno, item.fullname, item.complexity)
        for block in cc_visit(source)
        for item in [block, *getattr(block, "methods", [])]
        if item.complexity > MAX_COMPLEXITY
    }
    for lineno, name, complexity in sorted(complex_):
        found.append(f"{where}:{lineno}: {name} complexity {complexity}")
    tree = ast.parse(source)
    for lineno, name in foreign_private_reads(tree):
        found.append(f"{where}:{lineno}: reads another module's private attribute {name}")
    for node in ast.walk(tree):
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
