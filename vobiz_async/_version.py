"""The package version: the single source that the build's metadata is read from."""

__version__ = "0.1.0"
