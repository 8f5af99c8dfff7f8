"""Reading the local book for one account as a frame the diff understands."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from recon.position import COLUMNS
from recon.store.models import Position

_COLUMNS = [getattr(Position, name) for name in COLUMNS]


def load_book(session: Session, account_id: str) -> pd.DataFrame:
    """Every local row of `account_id`, indexed by asset_id, decimals as `Decimal`."""
    # Core execution on the session's connection: the same column types (so the same values)
    # without the ORM's per-row loading; plain tuples spare pandas probing each Row.
    # (Measured against one object array per column built from `.all()`: 0.63 vs 1.06 s
    # at 100k on SQLite, 0.47 vs 0.73 s on PostgreSQL.)
    query = select(*_COLUMNS).where(Position.account_id == account_id)
    rows = [tuple(row) for row in session.connection().execute(query)]
    frame = pd.DataFrame.from_records(rows, columns=list(COLUMNS)).astype(object)
    return frame.set_index("asset_id", drop=False)


def count_positions(session: Session, account_id: str) -> int:
    query = select(func.count()).select_from(Position).where(Position.account_id == account_id)
    return int(session.execute(query).scalar_one())
