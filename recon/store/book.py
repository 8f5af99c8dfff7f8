"""Reading the local book for one account as a frame the diff understands."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session

from recon.position import COLUMNS
from recon.store.bulk import read_rows
from recon.store.models import Position

_COLUMNS = [getattr(Position, name) for name in COLUMNS]
_TABLE: Table = Position.__table__  # type: ignore[assignment]


def load_book(session: Session, account_id: str) -> pd.DataFrame:
    """Every local row of `account_id`, indexed by asset_id, decimals as `Decimal`."""
    rows = _rows(session, account_id)
    frame = pd.DataFrame.from_records(rows, columns=list(COLUMNS)).astype(object)
    return frame.set_index("asset_id", drop=False)


def _rows(session: Session, account_id: str) -> list[tuple[Any, ...]]:
    if session.get_bind().dialect.name == "postgresql":
        # The driver's fetchall: the same values (the driver makes the Decimals), without a
        # fetchone() and a Row per position: 66 -> 52 ms at 10k, 640 -> 484 ms at 100k.
        return read_rows(session, _TABLE, COLUMNS, {"account_id": account_id})
    # SQLite keeps decimals as text: ExactDecimal's result processor makes them Decimal.
    # Core execution on the session's connection, not the ORM's per-row loading; plain
    # tuples spare pandas probing each Row. (Measured against one object array per column
    # built from `.all()`: 0.63 vs 1.06 s at 100k on SQLite.)
    query = select(*_COLUMNS).where(Position.account_id == account_id)
    return [tuple(row) for row in session.connection().execute(query)]


def count_positions(session: Session, account_id: str) -> int:
    query = select(func.count()).select_from(Position).where(Position.account_id == account_id)
    return int(session.execute(query).scalar_one())
