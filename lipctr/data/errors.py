"""Errors raised by the data pipeline. Every message names the file / field / key at fault."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data or configuration (the message says what, where, and what was expected)."""


class DatasetNotFoundError(DataError):
    """The dataset's files are absent; the message lists exactly which files go in which folder."""


class DataWarning(UserWarning):
    """Data that loads but is likely a mistake (e.g. an index column used as a feature);
    also listed in Dataset.stats["warnings"]."""
