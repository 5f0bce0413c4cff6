"""Every domain error of tokenmill, on one base class.

`TokenmillError` means "the user can act on this": a bad config, input, output, tokenizer file or
request. The CLI prints such an error as one line and exits 2; anything else is a bug and raises
with its traceback. Each class keeps the standard base it had (ValueError, OSError, RuntimeError),
so code that caught those still does."""

from __future__ import annotations

from tokenizers_impl.errors import TokenizerError, TokenmillError


class ConfigError(TokenmillError, ValueError):
    """A bad job configuration; the message names the field."""


class InputError(TokenmillError, ValueError):
    """The inputs cannot be planned: a glob matches nothing, a path is missing, a format is unknown."""


class StorageError(TokenmillError, OSError):
    """A storage operation failed for good (after retries, or at once for a permanent error)."""


class LedgerError(TokenmillError, RuntimeError):
    """The output's ledger or manifest disagrees with the job (e.g. written with another config)."""


class LeaseError(TokenmillError, RuntimeError):
    """Another run holds the output's lease (or this run lost it)."""


class UnitFailed(TokenmillError, RuntimeError):
    """A work unit raised (after the storage retries); names the unit and the cause."""


class LoaderError(TokenmillError, RuntimeError):
    """The loader cannot serve what was asked (no committed shards, a resume state that does not
    match the dataset, a bad option)."""


class AnalyticsError(TokenmillError, ValueError):
    """A report cannot be built from what was given (no outputs, an unknown baseline, bad SQL)."""


__all__ = [
    "AnalyticsError",
    "ConfigError",
    "InputError",
    "LeaseError",
    "LedgerError",
    "LoaderError",
    "StorageError",
    "TokenizerError",
    "TokenmillError",
    "UnitFailed",
]
