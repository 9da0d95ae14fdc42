"""Where recordings land: one interface (`Sink`) for a folder and for object storage."""

from .base import Sink, Stored, Writer

__all__ = ["Sink", "Stored", "Writer"]
