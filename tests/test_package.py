"""The package's surface: its version and what importing it costs."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

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
