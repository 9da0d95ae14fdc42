"""The package's surface: its version and what importing it costs."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _procs import default_sigint

import vobiz_async


def test_version_is_the_installed_distributions() -> None:
    """`__version__` is the version the build wrote into the installed metadata."""
    assert vobiz_async.__version__ == importlib.metadata.version("vobiz-async")


def test_import_leaves_importlib_metadata_alone() -> None:
    """Importing the package (and the CLI) does not load importlib.metadata, 50 ms or more."""
    probe = "import sys, vobiz_async.cli; print('importlib.metadata' in sys.modules)"
    done = subprocess.run(  # noqa: S603 - our own interpreter, no shell
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=default_sigint,
    )
    assert done.stdout.strip() == "False"


#: What a cheap start leaves alone (issue 23, item 3): aiohttp (its server side above all),
#: S3, Ray, rich, and the library's webhook, receiver, scale-out and S3 modules.
HEAVY = frozenset({"aiohttp", "aiobotocore", "botocore", "ray", "rich"})
HEAVY_OWN = frozenset(
    {"vobiz_async.webhooks", "vobiz_async.receiver", "vobiz_async.scaleout", "vobiz_async.sinks.s3"}
)


def heavy(modules: list[str]) -> list[str]:
    """The modules of `modules` a cheap start must not load."""
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY_OWN)


def loaded_by(code: str, *argv: str) -> list[str]:
    """The modules `python -c CODE ARGV...` has loaded when it ends (printed on stderr)."""
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print(*sorted(sys.modules), file=sys.stderr))\n" + code
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter, no shell
        [sys.executable, "-c", probe, *argv],
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=default_sigint,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.split()


def test_import_loads_no_heavy_module() -> None:
    """`import vobiz_async` loads neither aiohttp, S3, Ray, rich nor the webhook code."""
    modules = loaded_by("import vobiz_async")

    assert "vobiz_async" in modules
    assert heavy(modules) == []


def test_cli_help_loads_no_heavy_module() -> None:
    """`python -m vobiz_async --help` (the console script's code) loads none of them either."""
    modules = loaded_by(
        "import runpy, sys\n"
        "sys.argv[0] = 'vobiz-recordings'\n"
        "try:\n    runpy.run_module('vobiz_async', run_name='__main__')\n"
        "except SystemExit as end:\n    assert end.code == 0, end.code\n",
        "--help",
    )

    assert "vobiz_async.cli.parser" in modules
    assert heavy(modules) == []


def test_console_script_help_loads_no_heavy_module() -> None:
    """The installed `vobiz-recordings --help` imports none of them (Python's own import log)."""
    script = shutil.which("vobiz-recordings", path=str(Path(sys.executable).parent))
    assert script is not None, "console script not installed next to the interpreter"
    done = subprocess.run(  # noqa: S603 - our own console script, no shell
        [script, "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
        preexec_fn=default_sigint,
    )
    imported = [line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if "|" in line]

    assert "vobiz_async.cli.parser" in imported
    assert heavy(imported) == []


def test_every_public_name_resolves() -> None:
    """Each name in `__all__` is importable from the package, and nothing else is made up."""
    for name in vobiz_async.__all__:
        assert getattr(vobiz_async, name) is not None, name
        assert name in dir(vobiz_async)
    assert vobiz_async.__all__ == sorted(vobiz_async.__all__)
    with pytest.raises(AttributeError, match="NoSuchName"):
        vobiz_async.NoSuchName  # type: ignore[attr-defined]  # noqa: B018
