"""The one exception family of the datasets package.

    DatasetError                 base; `.code` is a stable snake_case string a server can put in a problem+json
     +-- ManifestError           the manifest is missing or malformed                      (invalid_manifest)
     +-- UnknownDataset          a name the manifest does not list                         (unknown_dataset)
     +-- DatasetNotAvailable     a file is not in the cache, or not verified               (dataset_not_available)
     +-- ChecksumMismatch        a file's bytes differ from the manifest                   (checksum_mismatch)
     +-- FetchFailed             every mirror of a file failed; names each attempt         (fetch_failed)
     +-- DatasetFormatError      verified bytes that do not hold what the manifest says    (invalid_dataset_format)

Errors from the standard library (OSError, gzip, tarfile, pickle, urllib) are translated where they enter.
"""

from __future__ import annotations


class DatasetError(Exception):
    """Base of every datasets error; `code` names the failure for machines, the message for people."""

    code = "dataset_error"


class ManifestError(DatasetError):
    """The manifest file is missing or does not have the expected structure."""

    code = "invalid_manifest"


class UnknownDataset(DatasetError):
    """The manifest does not list this dataset name."""

    code = "unknown_dataset"


class DatasetNotAvailable(DatasetError):
    """A dataset file is missing from the cache or has not been verified."""

    code = "dataset_not_available"


class ChecksumMismatch(DatasetError):
    """A file's archive hash and payload hash both differ from the manifest."""

    code = "checksum_mismatch"


class FetchFailed(DatasetError):
    """Every mirror of a file failed; the message names the file, the expected hash and each attempt."""

    code = "fetch_failed"


class DatasetFormatError(DatasetError):
    """Verified bytes whose content disagrees with the manifest (shape, count, label range, layout)."""

    code = "invalid_dataset_format"
