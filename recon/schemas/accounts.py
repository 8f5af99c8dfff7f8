"""The Broker API mode's shapes: one account's outcome in a run, the run's result, and the
sidecar's per-account answers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from recon.schemas.base import IsoDatetime, Shape
from recon.schemas.result import RunResult, counts_of

# The run's result (its return value, the artifact) lists at most this many accounts; the
# counts cover all of them and every outcome is in `sync_runs` (GET /api/accounts).
MAX_OUTCOMES = 1_000


class AccountOutcome(Shape):
    """What one account's unit of a run did: applied (its own transaction), or failed."""

    account_id: str
    status: Literal["applied", "failed"]
    created_count: int = 0
    updated_count: int = 0
    removed_count: int = 0
    unchanged_count: int = 0
    error_count: int = 0
    sync_run_id: int | None = None
    event_id: int | None = None
    error: str | None = None

    @classmethod
    def applied(cls, result: RunResult) -> AccountOutcome:
        return cls(
            account_id=result.account_id,
            status="applied",
            sync_run_id=result.sync_run_id,
            event_id=result.event_id,
            **counts_of(result.summary),
        )


class FailedAccount(Shape):
    account_id: str
    error: str


class AccountsSummary(Shape):
    """Status's `accounts`: how the last run's accounts fared."""

    total: int
    applied: int
    failed: int
    failed_accounts: list[FailedAccount] = Field(default_factory=list)


class BrokerRunResult(Shape):
    """A Broker API run's result: the counts over every account, and the outcomes."""

    source: Literal["broker"] = "broker"
    flow_run_id: str | None
    trigger: str | None
    started_at: IsoDatetime
    finished_at: IsoDatetime
    accounts: AccountsSummary
    created_count: int
    updated_count: int
    removed_count: int
    error_count: int
    outcomes: list[AccountOutcome]
    outcomes_truncated: bool = False

    @classmethod
    def of(
        cls,
        outcomes: list[AccountOutcome],
        *,
        flow_run_id: str | None,
        trigger: str | None,
        started_at: datetime,
        finished_at: datetime,
    ) -> BrokerRunResult:
        failed = [o for o in outcomes if o.status == "failed"]
        return cls(
            flow_run_id=flow_run_id,
            trigger=trigger,
            started_at=started_at,
            finished_at=finished_at,
            accounts=AccountsSummary(
                total=len(outcomes),
                applied=len(outcomes) - len(failed),
                failed=len(failed),
                failed_accounts=[
                    FailedAccount(account_id=o.account_id, error=o.error or "failed")
                    for o in failed[:MAX_OUTCOMES]
                ],
            ),
            created_count=sum(o.created_count for o in outcomes),
            updated_count=sum(o.updated_count for o in outcomes),
            removed_count=sum(o.removed_count for o in outcomes),
            error_count=sum(o.error_count for o in outcomes),
            # Failures first: they are what an operator looks for.
            outcomes=(failed + [o for o in outcomes if o.status != "failed"])[:MAX_OUTCOMES],
            outcomes_truncated=len(outcomes) > MAX_OUTCOMES,
        )


class AccountInfo(Shape):
    """`GET /api/accounts`: one account as the local store knows it."""

    account_id: str
    positions: int
    last_applied_at: IsoDatetime | None
    last_applied_flow_run_id: str | None
    last_error: str | None
    last_error_at: IsoDatetime | None
