"""Every error the project raises on purpose, in one hierarchy.

    ReconError
    ├── ConfigurationError        settings missing or invalid
    ├── BrokerError               the broker could not give us a snapshot
    │   ├── BrokerTransientError  worth retrying: timeouts, resets, 429, 5xx, truncated bodies
    │   └── BrokerRejectedError   not worth retrying: 401/403 (keys), other 4xx
    ├── SnapshotRefusedError      the snapshot fails a safety check; nothing is written
    ├── ApiKeyError               an API key cannot be created or revoked as asked
    └── StoreError                the app database failed (one-line reason; the driver's
        │                         error is chained as __cause__)
        └── SyncInProgressError   another run holds the database lock

Callers catch the branch they can act on; `str(error)` is always safe to show an
operator (no keys, no tokens).
"""

from __future__ import annotations


class ReconError(Exception):
    """Base of every error raised on purpose by this project."""


class ConfigurationError(ReconError):
    """Settings are missing or invalid."""


class BrokerError(ReconError):
    """The broker did not give a usable answer."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class BrokerTransientError(BrokerError):
    """A failure that may go away on retry (timeout, connection reset, 429, 5xx)."""


class BrokerRejectedError(BrokerError):
    """The broker refused the request; retrying cannot help (wrong keys, bad request)."""


class SnapshotRefusedError(ReconError):
    """A safety check refused the snapshot before anything was written."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


class ApiKeyError(ReconError):
    """An API key operation that cannot be done (unknown capability, duplicate name...)."""


class StoreError(ReconError):
    """The app database could not load, lock or apply (see `store.database.store_errors`)."""


class SyncInProgressError(StoreError):
    """Another reconciliation holds the lock for this database."""
