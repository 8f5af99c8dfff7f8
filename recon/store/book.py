"""Reading the local book for one account as a frame the diff understands."""

from __future__ import annotations

import pandas as pd
from sqlalchemy.orm import Session

from recon.position import positions_frame
from recon.store.dialects import dialect_for


def load_book(session: Session, account_id: str) -> pd.DataFrame:
    """Every local row of `account_id`, indexed by asset_id, decimals as `Decimal`."""
    return positions_frame(dialect_for(session).read_book(session, account_id))
