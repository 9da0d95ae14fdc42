"""Where recordings land: one interface (`Sink`) for a folder and for object storage."""

from __future__ import annotations

import os
from typing import Any

from ..errors import ObjectStoreError
from .base import AlreadyStored, Sink, Stored, Writer
from .directory import DirectorySink
from .s3 import ByteBudget, ObjectProblem, S3Sink, verify_objects

__all__ = [
    "AlreadyStored",
    "ByteBudget",
    "DirectorySink",
    "ObjectProblem",
    "ObjectStoreError",
    "S3Sink",
    "Sink",
    "Stored",
    "Writer",
    "sink_for",
    "verify_objects",
]


def sink_for(dest: str | os.PathLike[str] | Sink, **options: Any) -> Sink:
    """The sink for a destination: a `Sink` as it is, `s3://bucket/prefix/` as an `S3Sink`,
    anything else as a folder (`DirectorySink`). `layout` applies to both; `fsync` to a
    folder; `s3_endpoint_url` and `s3_region` to object storage."""
    layout = options.get("layout", "flat")
    if isinstance(dest, Sink):
        return dest
    if isinstance(dest, str) and dest.startswith("s3://"):
        return S3Sink.from_url(
            dest,
            layout=layout,
            endpoint_url=options.get("s3_endpoint_url"),
            region=options.get("s3_region"),
        )
    return DirectorySink(dest, layout=layout, fsync=options.get("fsync", False))
