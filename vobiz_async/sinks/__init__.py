"""Where recordings land: one interface (`Sink`) for a folder and for object storage."""

from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigurationError
from .base import Sink, Stored, Writer
from .directory import DirectorySink

__all__ = ["DirectorySink", "Sink", "Stored", "Writer", "sink_for"]


def sink_for(dest: str | os.PathLike[str] | Sink, **options: Any) -> Sink:
    """The sink for a destination: a `Sink` as it is, `s3://bucket/prefix/` as an `S3Sink`,
    anything else as a folder (`DirectorySink`); `options` (`layout`, `fsync`) apply to the
    sinks this builds."""
    if isinstance(dest, Sink):
        return dest
    if isinstance(dest, str) and dest.startswith("s3://"):
        raise ConfigurationError(
            "s3:// destinations need the S3 sink, which this version does not have yet"
        )
    return DirectorySink(
        dest, layout=options.get("layout", "flat"), fsync=options.get("fsync", False)
    )
