"""What an error message may quote: URLs without their secrets, bodies in short escaped excerpts.

Pure functions, used where the library builds its errors (`VobizError` applies both to its
own message) and wherever it logs text it did not write. A signed media URL's query is a
credential of its own (`X-Amz-Signature=...`), and a hostile server's body can be megabytes
of binary: neither belongs in an error, a log line, a report or the receiver's spool.
"""

from __future__ import annotations

import re

__all__ = ["MAX_MESSAGE", "QUOTE_LIMIT", "bounded_message", "describe", "excerpt", "redact_urls"]

#: Bytes (or characters) of a body an error message quotes at most.
QUOTE_LIMIT = 64
#: Characters of an error message kept at most; the rest is counted, not kept.
MAX_MESSAGE = 2000
#: Characters of another library's error text (aiohttp's) quoted in one of ours.
_FOREIGN_LIMIT = 200

# An http(s) URL inside free text: it ends at whitespace, a quote, a backslash (an escaped
# quote in a repr), parentheses, angle or curly brackets. Square brackets stay: an IPv6 host.
_URL = re.compile(r"""(?i)\bhttps?://[^\s'"\\()<>{}`|^]+""")


def _redact_one(match: re.Match[str]) -> str:
    url = match.group(0)
    scheme, _, rest = url.partition("://")
    cut = len(rest)
    for mark in "?#":
        if (at := rest.find(mark)) != -1:
            cut = min(cut, at)
    authority, slash, path = rest[:cut].partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def redact_urls(text: str) -> str:
    """`text` with every http(s) URL in it cut to scheme, host, port and path: the query and
    the fragment (a signed URL's signature) and any `user:password@` are dropped."""
    if "://" not in text:
        return text
    return _URL.sub(_redact_one, text)


def _escape(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def excerpt(data: bytes | bytearray | str, limit: int = QUOTE_LIMIT) -> str:
    """`data` as an error message may quote it: at most `limit` bytes (characters for text),
    escaped, and how many more there were.

    Bytes come as their `repr` (`b'ID3\\x00'`); text with its control characters escaped,
    without quotes. `…(N more bytes)` says what was left out.
    """
    head = data[:limit]
    more = len(data) - len(head)
    if isinstance(head, str):
        shown, unit = _escape(head), "characters"
    else:
        shown, unit = repr(bytes(head)), "bytes"
    return f"{shown}…({more} more {unit})" if more else shown


def describe(err: BaseException, limit: int = _FOREIGN_LIMIT) -> str:
    """`TypeName: text` for another library's exception, its text clipped and escaped:
    aiohttp's parser errors quote the raw bytes they choked on, and its response errors the
    whole URL."""
    return f"{type(err).__name__}: {excerpt(redact_urls(str(err)), limit)}"


def bounded_message(text: str) -> str:
    """An error message with its URLs redacted, at most `MAX_MESSAGE` characters long."""
    text = redact_urls(text)
    if len(text) <= MAX_MESSAGE:
        return text
    return f"{text[:MAX_MESSAGE]}…({len(text) - MAX_MESSAGE} more characters)"
