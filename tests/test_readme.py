"""Every fenced ```python block in README.md runs as written, in an empty folder.

Two kinds of block, told apart by their first line:

- A block of files starts with a comment line naming a file alone (`# pytest.ini`,
  `# conftest.py`, `# test_archive.py`); each such line starts a new file. The files are
  written into an empty folder and `python -m pytest` runs there; it must pass.
- Any other block is a script. It runs with `python -X dev` in an empty folder against the
  embedded fake on 127.0.0.1, found through VOBIZ_BASE_URL, VOBIZ_AUTH_ID and
  VOBIZ_AUTH_TOKEN; it must exit 0 without a traceback or a resource warning.

A README example that cannot run offline must not be a `python` block (use `text`).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import attrs
import pytest
from _procs import default_sigint

from vobiz_async.testing import FakeVobiz

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
#: A comment line that names one file and nothing else, e.g. `# conftest.py`.
FILE_LINE = re.compile(r"^# ((?:[\w.-]+/)*[\w-][\w.-]*\.[A-Za-z0-9]+)[ \t]*$")
TIMEOUT = 120.0


@attrs.frozen
class Block:
    """One fenced python block of the README."""

    line: int
    text: str

    @property
    def files(self) -> dict[str, str] | None:
        """The files of a block of files, by relative path; None for a script."""
        lines = self.text.splitlines(keepends=True)
        first = next((line for line in lines if line.strip()), "")
        if not FILE_LINE.match(first.rstrip("\n")):
            return None
        files: dict[str, list[str]] = {}
        current: list[str] = []
        for line in lines:
            if match := FILE_LINE.match(line.rstrip("\n")):
                assert match[1] not in files, f"README line {self.line}: {match[1]} twice"
                current = files[match[1]] = []
            else:
                current.append(line)
        return {name: "".join(body).strip("\n") + "\n" for name, body in files.items()}


def readme_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    return [
        Block(line=text.count("\n", 0, match.start()) + 1, text=match[1])
        for match in FENCE.finditer(text)
    ]


BLOCKS = readme_blocks()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without VOBIZ_* or PYTEST_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOBIZ_", "PYTEST_"))}
    return {**env, **extra}


async def run(args: list[str], cwd: Path, env: Mapping[str, str]) -> tuple[int, str]:
    """Run `args` in `cwd`; the exit status and everything it printed."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        preexec_fn=default_sigint,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def test_readme_has_both_kinds_of_block() -> None:
    """The README shows at least one script and one block of files (the test sees them)."""
    kinds = {block.files is None for block in BLOCKS}

    assert kinds == {True, False}


def test_blocks_of_files_are_split_at_name_lines() -> None:
    """A block of files splits at each `# name` line and keeps everything else."""
    block = Block(line=1, text="# pytest.ini\n[pytest]\n\n# sub/test_x.py\n# a comment\nx = 1\n")

    assert block.files == {"pytest.ini": "[pytest]\n", "sub/test_x.py": "# a comment\nx = 1\n"}


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}" for b in BLOCKS])
async def test_readme_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    """The README's python block at this line runs as written in an empty folder."""
    folder = tmp_path / "example"
    folder.mkdir()
    files = block.files
    if files is not None:
        for name, body in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(body, encoding="utf-8")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        code, output = await run(command, folder, clean_env())
        assert code == 0, f"README line {block.line}: pytest failed:\n{output}"
        assert " passed" in output
        return
    (folder / "example.py").write_text(block.text, encoding="utf-8")
    async with FakeVobiz(recordings=30, seed=0) as fake:
        env = clean_env(
            VOBIZ_BASE_URL=fake.base_url,
            VOBIZ_AUTH_ID=fake.auth_id,
            VOBIZ_AUTH_TOKEN=fake.auth_token,
        )
        code, output = await run([sys.executable, "-X", "dev", "example.py"], folder, env)
    assert code == 0, f"README line {block.line}: the example failed:\n{output}"
    assert "Traceback" not in output
    assert "Warning" not in output
    assert "Unclosed" not in output
