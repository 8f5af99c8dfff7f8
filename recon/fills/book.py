"""The local rows of a few assets, as the frame the diff reads (the whole book is not needed)."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from recon.position import COLUMNS, positions_frame
from recon.store.models import Position

_COLUMNS = [getattr(Position, name) for name in COLUMNS]


def load_assets(session: Session, account_id: str, asset_ids: list[str]) -> pd.DataFrame:
    query = select(*_COLUMNS).where(
        Position.account_id == account_id, Position.asset_id.in_(asset_ids)
    )
    rows = [tuple(row) for row in session.connection().execute(query)]
    return positions_frame(rows)


def count_positions(session: Session, account_id: str) -> int:
    """The book's size, for the removal cap's percentage."""
    query = select(func.count()).select_from(Position).where(Position.account_id == account_id)
    return int(session.execute(query).scalar_one())
