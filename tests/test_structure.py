"""`scripts/structure_check.py` on small synthetic packages: what it flags, and what not."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "structure_check.py"


@pytest.fixture(name="check", scope="module")
def _check() -> ModuleType:
    pytest.importorskip("radon")
    spec = importlib.util.spec_from_file_location("structure_check", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("structure_check", module)
    spec.loader.exec_module(module)
    return module


def breaches(check: ModuleType, tmp_path: Path, source: str) -> list[str]:
    path = tmp_path / "mod.py"
    path.write_text(source)
    found: list[str] = check.breaches(path, root=tmp_path)
    return found


def test_reading_another_modules_private_attribute_is_a_breach(
    check: ModuleType, tmp_path: Path
) -> None:
    """`session._token` in a module that does not define `_token` is named, with its line."""
    source = "def config(session):\n    return session._token.value\n"
    assert breaches(check, tmp_path, source) == [
        "mod.py:2: reads another module's private attribute _token"
    ]


def test_a_modules_own_private_attributes_and_outside_modules_are_not(
    check: ModuleType, tmp_path: Path
) -> None:
    """`self._x`, `other._x` of a class defined here, and `hashlib._Hash` pass."""
    source = (
        "from __future__ import annotations\n\nimport hashlib\n\n\n"
        "class A:\n"
        "    def __init__(self) -> None:\n"
        "        self._x = 1\n\n"
        "    def same(self, other: 'A') -> int:\n"
        "        return other._x + self._x\n\n\n"
        "def digest() -> hashlib._Hash:\n"
        "    return hashlib.sha256()\n"
    )
    assert breaches(check, tmp_path, source) == []
