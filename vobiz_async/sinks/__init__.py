"""Where recordings land: one interface (`Sink`) for a folder and for object storage."""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError, ObjectStoreError
from .base import AlreadyStored, Sink, Stored, Writer
from .directory import DirectorySink
from .s3 import ByteBudget, ObjectAudit, ObjectProblem, S3Sink, audit_objects, verify_objects

__all__ = [
    "AlreadyStored",
    "ByteBudget",
    "DirectorySink",
    "ObjectAudit",
    "ObjectProblem",
    "ObjectStoreError",
    "S3Sink",
    "Sink",
    "Stored",
    "Writer",
    "audit_objects",
    "s3_destination",
    "sink_for",
    "verify_objects",
]


#: A URL scheme at the start of a destination (RFC 3986: a letter, then letters, digits,
#: `+`, `-`, `.`), followed by its colon.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def _shown(dest: str) -> str:
    """`dest` for a message: a URL's userinfo, query and fragment left out."""
    parts = urlsplit(dest)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}" if parts.netloc else dest.split("?")[0]


def s3_destination(dest: str) -> str | None:
    """The `s3://bucket/prefix` URL a destination string names, or None for a folder.

    `s3://` matches in any case (`S3://Bucket/p/` is `s3://Bucket/p/`: the scheme is
    lower-cased, the bucket and prefix kept as given). Anything else that starts like a URL
    (`gs://`, `https://`, `file://`, `s3:/bucket`, `name:rest`) raises `ConfigurationError`
    rather than becoming a folder of that name. A folder path is anything that does not start
    with a scheme: `./a:b`, `/data/a:b` and `dir/a:b` are folders; a single letter before
    the colon is a drive (`C:/archive`, `c:archive`) and stays a folder on every system, so
    on POSIX `C:/archive` is a folder named `C:` with `archive` in it. A folder whose name
    starts like a scheme is written with `./` in front (`./archive:2026`).
    """
    match = _SCHEME.match(dest)
    if match is None or len(match.group(1)) == 1:
        return None
    scheme, rest = match.group(1).lower(), dest[match.end() :]
    if scheme == "s3":
        if not rest.startswith("//"):
            raise ConfigurationError(
                f"not an s3://bucket/prefix/ URL: {_shown(dest)} (two slashes after s3:)"
            )
        return "s3:" + rest
    hint = "" if rest.startswith("//") else f" (a folder of that name: ./{_shown(dest)})"
    raise ConfigurationError(
        f"unsupported destination {_shown(dest)}: give a folder or s3://bucket/prefix/{hint}"
    )


def sink_for(dest: str | os.PathLike[str] | Sink, **options: Any) -> Sink:
    """The sink for a destination: a `Sink` as it is, `s3://bucket/prefix/` (scheme in any
    case) as an `S3Sink`, any other URL-like string a `ConfigurationError`
    (`s3_destination`), and anything else as a folder (`DirectorySink`; a `PathLike` is
    always a folder). `layout` applies to both; `fsync` to a folder; `s3_endpoint_url` and
    `s3_region` to object storage."""
    layout = options.get("layout", "flat")
    if isinstance(dest, Sink):
        return dest
    url = s3_destination(dest) if isinstance(dest, str) else None
    if url is not None:
        return S3Sink.from_url(
            url,
            layout=layout,
            endpoint_url=options.get("s3_endpoint_url"),
            region=options.get("s3_region"),
        )
    return DirectorySink(dest, layout=layout, fsync=options.get("fsync", False))
