"""Where recordings land: one interface (`Sink`) for a folder and for object storage."""

from ..errors import ObjectStoreError
from .base import Sink, Stored, Writer
from .s3 import ByteBudget, ObjectProblem, S3Sink, verify_objects

__all__ = [
    "ByteBudget",
    "ObjectProblem",
    "ObjectStoreError",
    "S3Sink",
    "Sink",
    "Stored",
    "Writer",
    "verify_objects",
]
