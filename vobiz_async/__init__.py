"""asyncio client for the Vobiz Recording API, with a verified bulk downloader.

The public names load on first use (PEP 562): `import vobiz_async` costs neither aiohttp nor
the webhook, S3 or scale-out code until a name that needs them is touched. To export a new
name, add it to `_EXPORTS` (name -> module), to the `TYPE_CHECKING` imports and to `__all__`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .engines import ProcessEngine
    from .errors import (
        APIConnectionError,
        APIStatusError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        BucketNotFoundError,
        ConfigurationError,
        ConflictError,
        DiskError,
        DownloadError,
        IntegrityError,
        InvalidRecordingIdError,
        ManifestError,
        NotFoundError,
        ObjectStoreError,
        PaymentRequiredError,
        PermissionDeniedError,
        RateLimitError,
        ResponseValidationError,
        ServerError,
        SessionClosedError,
        StorageCredentialsError,
        StorageError,
        StoragePermissionError,
        UnprocessableEntityError,
        UnsafeURLError,
        VobizError,
    )
    from .manifest import Manifest, ManifestEntry
    from .models import ExportResult, Page, PageMeta, Recording
    from .pager import AsyncPager
    from .recordings import Recordings
    from .results import (
        DownloadReport,
        DownloadResult,
        DownloadStatus,
        ProgressEvent,
        ProgressKind,
    )
    from .selection import Selection
    from .session import AsyncSession, SessionConfig
    from .webhooks import (
        RecordingEvent,
        SignatureCheck,
        SignatureVersion,
        WebhookPayloadError,
        WebhookVerifier,
        compute_signature,
        parse_callback,
        verify_signature,
    )

#: Each public name and the module it lives in, imported when the name is first used.
_EXPORTS: dict[str, str] = {
    "APIConnectionError": "errors",
    "APIStatusError": "errors",
    "APITimeoutError": "errors",
    "AsyncPager": "pager",
    "AsyncSession": "session",
    "SessionConfig": "session",
    "Selection": "selection",
    "AuthenticationError": "errors",
    "BadRequestError": "errors",
    "BucketNotFoundError": "errors",
    "ConfigurationError": "errors",
    "ConflictError": "errors",
    "DiskError": "errors",
    "DownloadError": "errors",
    "DownloadReport": "results",
    "DownloadResult": "results",
    "DownloadStatus": "results",
    "ExportResult": "models",
    "IntegrityError": "errors",
    "InvalidRecordingIdError": "errors",
    "Manifest": "manifest",
    "ManifestEntry": "manifest",
    "ManifestError": "errors",
    "NotFoundError": "errors",
    "ObjectStoreError": "errors",
    "Page": "models",
    "PageMeta": "models",
    "PaymentRequiredError": "errors",
    "PermissionDeniedError": "errors",
    "ProcessEngine": "engines",
    "ProgressEvent": "results",
    "ProgressKind": "results",
    "RateLimitError": "errors",
    "Recording": "models",
    "RecordingEvent": "webhooks",
    "Recordings": "recordings",
    "ResponseValidationError": "errors",
    "ServerError": "errors",
    "SessionClosedError": "errors",
    "SignatureCheck": "webhooks",
    "SignatureVersion": "webhooks",
    "StorageCredentialsError": "errors",
    "StorageError": "errors",
    "StoragePermissionError": "errors",
    "UnprocessableEntityError": "errors",
    "UnsafeURLError": "errors",
    "VobizError": "errors",
    "WebhookPayloadError": "webhooks",
    "WebhookVerifier": "webhooks",
    "compute_signature": "webhooks",
    "parse_callback": "webhooks",
    "verify_signature": "webhooks",
}

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncPager",
    "AsyncSession",
    "AuthenticationError",
    "BadRequestError",
    "BucketNotFoundError",
    "ConfigurationError",
    "ConflictError",
    "DiskError",
    "DownloadError",
    "DownloadReport",
    "DownloadResult",
    "DownloadStatus",
    "ExportResult",
    "IntegrityError",
    "InvalidRecordingIdError",
    "Manifest",
    "ManifestEntry",
    "ManifestError",
    "NotFoundError",
    "ObjectStoreError",
    "Page",
    "PageMeta",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "ProcessEngine",
    "ProgressEvent",
    "ProgressKind",
    "RateLimitError",
    "Recording",
    "RecordingEvent",
    "Recordings",
    "ResponseValidationError",
    "Selection",
    "ServerError",
    "SessionClosedError",
    "SessionConfig",
    "SignatureCheck",
    "SignatureVersion",
    "StorageCredentialsError",
    "StorageError",
    "StoragePermissionError",
    "UnprocessableEntityError",
    "UnsafeURLError",
    "VobizError",
    "WebhookPayloadError",
    "WebhookVerifier",
    "__version__",
    "compute_signature",
    "parse_callback",
    "verify_signature",
]


def __getattr__(name: str) -> Any:
    """Import the module a public name lives in, the first time the name is used."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next use is a plain attribute lookup
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
