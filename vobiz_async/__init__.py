"""asyncio client for the Vobiz Recording API, with a verified bulk downloader."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vobiz-async")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0.0.0"

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
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    UnprocessableEntityError,
    UnsafeURLError,
    VobizError,
)
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
    "ExportResult",
    "IntegrityError",
    "InvalidRecordingIdError",
    "NotFoundError",
    "Page",
    "PageMeta",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "RateLimitError",
    "Recording",
    "Recordings",
    "ResponseValidationError",
    "ServerError",
    "UnprocessableEntityError",
    "UnsafeURLError",
    "VobizError",
    "__version__",
]
