"""The exception tree: every error the library raises derives from `VobizError`.

Status errors carry the evidence a caller needs to act or to ask support: the status code,
the response headers, the parsed body and Vobiz's correlation id. Which class a status maps to
is decided in exactly one place, `vobiz_async.protocol.make_status_error`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from .redact import bounded_message

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BucketNotFoundError",
    "ConfigurationError",
    "ConflictError",
    "DiskError",
    "DownloadError",
    "IntegrityError",
    "InvalidRecordingIdError",
    "ManifestError",
    "NotFoundError",
    "ObjectStoreError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResponseValidationError",
    "ServerError",
    "SessionClosedError",
    "StorageCredentialsError",
    "StorageError",
    "StoragePermissionError",
    "UnprocessableEntityError",
    "UnsafeURLError",
    "VobizError",
]


class VobizError(Exception):
    """Root of every error raised by vobiz_async.

    Its message never carries a URL's query, fragment or userinfo (a signed media URL's
    signature) and is at most `redact.MAX_MESSAGE` characters: both are enforced here, once,
    for every error, whatever text it was built from.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(bounded_message(a) if isinstance(a, str) else a for a in args))


class ConfigurationError(VobizError):
    """The client is misconfigured: missing credentials, a bad base URL."""


class SessionClosedError(VobizError, RuntimeError):
    """The `AsyncSession` was closed; it opens no new connection pool. Create a new one."""


class InvalidRecordingIdError(VobizError, ValueError):
    """A recording id that cannot be used safely in a URL path or as a file name."""


class APIStatusError(VobizError):
    """Vobiz answered with a non-success status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        api_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message: str = self.args[0]
        self.status_code = status_code
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(headers or {}))
        self.body = body
        self.api_id = api_id

    def __str__(self) -> str:
        ref = f" (api_id {self.api_id})" if self.api_id else ""
        return f"{self.status_code}: {self.message}{ref}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle (for worker processes) must call __init__ with the keyword-only fields.
        rebuild = functools.partial(
            type(self),
            self.message,
            status_code=self.status_code,
            headers=CIMultiDict(self.headers),
            body=self.body,
            api_id=self.api_id,
        )
        extra = {k: v for k, v in self.__dict__.items() if k != "headers"}  # a proxy: no pickle
        return (rebuild, (), extra)


class BadRequestError(APIStatusError):
    """400: the request was malformed."""


class AuthenticationError(APIStatusError):
    """401: the auth id or token is wrong, rotated or missing (or the path's case is wrong)."""


class PaymentRequiredError(APIStatusError):
    """402: the account's balance is insufficient."""


class PermissionDeniedError(APIStatusError):
    """403: not allowed, or (for export) an export is already running."""


class NotFoundError(APIStatusError):
    """404: the recording does not exist, was deleted, or expired."""


class ConflictError(APIStatusError):
    """409: the request conflicts with the resource's state."""


class UnprocessableEntityError(APIStatusError):
    """422: the request was well-formed but its values were refused."""


class RateLimitError(APIStatusError):
    """429: too many requests; `headers` may carry Retry-After."""


class ServerError(APIStatusError):
    """5xx: Vobiz or a proxy in front of it failed."""


class APIConnectionError(VobizError):
    """The request never got a complete HTTP answer: DNS, connect, reset, broken body."""


class APITimeoutError(APIConnectionError):
    """The request timed out."""


class ResponseValidationError(VobizError):
    """A success response whose body is not JSON or not shaped as documented."""

    def __init__(self, message: str, *, body: Any = None) -> None:
        super().__init__(message)
        self.body = body

    def __reduce__(self) -> tuple[Any, ...]:
        return (functools.partial(type(self), str(self), body=self.body), (), self.__dict__)


class DownloadError(VobizError):
    """A recording could not be saved whole and verified."""


class IntegrityError(DownloadError):
    """The bytes received disagree with what the server announced (short body, bad range)."""


class UnsafeURLError(DownloadError):
    """A recording URL (or a redirect) the downloader refuses to fetch."""


class StorageError(DownloadError):
    """The archive's destination (a folder or an object store) refused or lost a write.

    `destination_wide` is true when the problem is the destination's, not the recording's
    (a missing bucket, bad storage credentials, a full or read-only disk): a batch then stops
    starting new transfers.
    """

    destination_wide: bool = False


class DiskError(StorageError):
    """Writing to the destination failed: disk full, permission denied, and the like."""


class ManifestError(VobizError):
    """The archive's index cannot be opened, imported, read or written."""


class ObjectStoreError(StorageError):
    """An object store (S3 or an S3-compatible one) refused or lost an upload or a listing.

    `code` is the store's error code (`NoSuchBucket`, `BadDigest`, ...) when it sent one.
    The message names the bucket and never carries a secret.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (functools.partial(type(self), str(self), code=self.code), (), self.__dict__)


class BucketNotFoundError(ObjectStoreError):
    """The bucket does not exist (`NoSuchBucket`): nothing in the batch can be stored."""

    destination_wide = True


class StoragePermissionError(ObjectStoreError):
    """The store refused the credentials' access to the bucket (`AccessDenied`)."""

    destination_wide = True


class StorageCredentialsError(StoragePermissionError):
    """No storage credentials, or ones the store does not accept (unknown key, bad
    signature, expired token)."""
