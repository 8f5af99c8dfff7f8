"""The naive cron job as a whole process: `python -m benchmarks.naive_script`.

What the end-to-end figure compares `recon sync` with: a script a new user would write.
It fetches the positions with alpaca-py (raw JSON, as ours), parses each record into
exact `Decimal`s with the project's own per-record parser, and writes them with
`benchmarks/naive.py` (one ORM object per row, same journal rows). No Prefect, no checks,
no lock. Reads ALPACA_BASE_URL / ALPACA_API_KEY / ALPACA_SECRET_KEY and RECON_DATABASE_URL;
prints `{"created": …, "updated": …, "removed": …}`.
"""

from __future__ import annotations

import json
import os

from alpaca.trading.client import TradingClient

from benchmarks.naive import run_naive
from recon.position import parse_record
from recon.store.database import upgrade


def main() -> None:
    client = TradingClient(
        os.environ["ALPACA_API_KEY"],
        os.environ["ALPACA_SECRET_KEY"],
        raw_data=True,
        url_override=os.environ["ALPACA_BASE_URL"],
    )
    account = client.get_account()
    positions = client.get_all_positions()
    assert isinstance(account, dict) and isinstance(positions, list)
    records = [parse_record(item, account["id"]) for item in positions]
    url = os.environ["RECON_DATABASE_URL"]
    upgrade(url)
    created, updated, removed = run_naive(url, account["id"], records)
    print(json.dumps({"created": created, "updated": updated, "removed": removed}))


if __name__ == "__main__":
    main()
