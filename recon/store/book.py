"""Reading the local book for one account as a frame the diff understands."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from recon.position import COLUMNS
from recon.store.models import Position

_COLUMNS = [getattr(Position, name) for name in COLUMNS]


def load_book(session: Session, account_id: str) -> pd.DataFrame:
    """Every local row of `account_id`, indexed by asset_id, decimals as `Decimal`."""
    # Core execution (same column types, so the same Decimal/bool/str values) skips the ORM's
    # row loading; the frame is then built column by column from object arrays, which is what
    # `from_records(...).astype(object)` produced, without pandas probing every row.
    query = select(*_COLUMNS).where(Position.account_id == account_id)
    rows = session.connection().execute(query).all()
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(COLUMNS)
    frame = pd.DataFrame(
        {name: _objects(values) for name, values in zip(COLUMNS, columns, strict=True)},
        columns=list(COLUMNS),
    )
    return frame.set_index("asset_id", drop=False)


def _objects(values: tuple[object, ...]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def count_positions(session: Session, account_id: str) -> int:
    query = select(func.count()).select_from(Position).where(Position.account_id == account_id)
    return int(session.execute(query).scalar_one())
