"""What `recon db prune` did: printed by the CLI (`--json`) and kept by its deployment."""

from __future__ import annotations

from recon.schemas.base import IsoDatetime, Shape


class TablePrune(Shape):
    """One table's part of a prune: rows deleted, in how many batches (transactions)."""

    table: str
    deleted: int
    batches: int
    longest_batch_seconds: float


class PruneResult(Shape):
    """`cutoff`: rows older than it were deleted, except what retention keeps (each
    position's latest change and its event, the newest events of the replay window, the
    runs those reference). `longest_batch_seconds` is the longest any one transaction
    held its locks."""

    cutoff: IsoDatetime
    tables: list[TablePrune]
    seconds: float

    @property
    def deleted(self) -> int:
        return sum(table.deleted for table in self.tables)

    @property
    def longest_batch_seconds(self) -> float:
        return max((table.longest_batch_seconds for table in self.tables), default=0.0)
