"""asyncio client for the Vobiz Recording API, with a verified bulk downloader."""

from ._version import __version__
from .download import (
    DownloadReport,
    DownloadResult,
    DownloadStatus,
    ProgressEvent,
    ProgressKind,
)
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    DiskError,
    DownloadError,
    IntegrityError,
    InvalidRecordingIdError,
    ManifestError,
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    StorageError,
    UnprocessableEntityError,
    UnsafeURLError,
    VobizError,
)
from .manifest import Manifest, ManifestEntry
from .models import ExportResult, Page, PageMeta, Recording
from .pager import AsyncPager
from .recordings import Recordings
from .session import AsyncSession

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncPager",
    "AsyncSession",
    "AuthenticationError",
    "BadRequestError",
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
    "Page",
    "PageMeta",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "ProgressEvent",
    "ProgressKind",
    "RateLimitError",
    "Recording",
    "Recordings",
    "ResponseValidationError",
    "ServerError",
    "StorageError",
    "UnprocessableEntityError",
    "UnsafeURLError",
    "VobizError",
    "__version__",
]
