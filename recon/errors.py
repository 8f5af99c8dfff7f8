"""Every error the project raises on purpose, in one hierarchy.

    ReconError
    ├── ConfigurationError        settings missing or invalid
    ├── BrokerError               the broker could not give us a snapshot
    │   ├── BrokerTransientError  worth retrying: timeouts, resets, 429, 5xx, truncated bodies
    │   │   └── BrokerRateLimitedError  a 429: retry after its X-RateLimit-Reset
    │   └── BrokerRejectedError   not worth retrying: 401/403 (keys), other 4xx
    ├── SnapshotRefusedError      the snapshot fails a safety check; nothing is written
    ├── ApiKeyError               an API key cannot be created or revoked as asked
    ├── OrchestrationError        Prefect could not do what was asked
    │   ├── DeploymentNotFoundError   the deployment is not on the server (yet)
    │   ├── RunInProgressError        a sync is already running or pending
    │   └── RunFailedError            a triggered run ended failed or crashed
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


class BrokerRateLimitedError(BrokerTransientError):
    """HTTP 429; `reset_after` is the seconds until the broker's X-RateLimit-Reset, if sent."""

    def __init__(self, message: str, *, reset_after: float | None = None) -> None:
        super().__init__(message, status_code=429)
        self.reset_after = reset_after


class BrokerRejectedError(BrokerError):
    """The broker refused the request; retrying cannot help (wrong keys, bad request)."""


class SnapshotRefusedError(ReconError):
    """A safety check refused the snapshot before anything was written."""


class ApiKeyError(ReconError):
    """An API key operation that cannot be done (unknown capability, duplicate name...)."""


class StoreError(ReconError):
    """The app database could not load, lock or apply (see `store.database.store_errors`)."""


class SyncInProgressError(StoreError):
    """Another reconciliation holds the lock for this database."""


class OrchestrationError(ReconError):
    """Prefect (the source of every run's state) could not do what was asked."""


class DeploymentNotFoundError(OrchestrationError):
    """The flow's deployment is not registered on the Prefect server (yet)."""


class RunInProgressError(OrchestrationError):
    """A sync is already running or pending; `flow_run_id` is the run in the way."""

    def __init__(self, flow_run_id: str, detail: str) -> None:
        super().__init__(
            f"a position sync is already in progress ({detail}); try again when it has finished"
        )
        self.flow_run_id = flow_run_id


class RunFailedError(OrchestrationError):
    """A triggered run ended failed or crashed; the message is its reason."""

    def __init__(self, flow_run_id: str, flow_run_url: str, reason: str) -> None:
        super().__init__(reason)
        self.flow_run_id = flow_run_id
        self.flow_run_url = flow_run_url
