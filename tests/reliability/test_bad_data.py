"""Scenario 3: bad data from the broker, on SQLite and PostgreSQL.

From an applied book of a dozen positions, each kind of bad snapshot gets its documented
outcome (docs/reconciliation.md): a bad record fails its own symbol only, the rest applies
and the local row of the bad record is held back; malformed JSON (after its retries), an
empty list while the account holds positions, a list that does not tie out and a mass
removal fail the run with a clear message, journal a `system:error` and write nothing
else. No local row is ever lost: the stored book is compared before and after every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from flows.reconcile import reconcile_positions
from recon.settings import get_settings
from recon.store.journal import POSITION_UPDATED, SYSTEM_ERROR
from tests.sim import Sim
from tests.support.books import Row, events_of, live_material, material, runs_of, stored_rows

pytestmark = pytest.mark.usefixtures("prefect_server")
FETCH_RETRIES = 1


@dataclass
class Tally:
    db: str
    cases: int = 0
    runs: int = 0
    protected: int = 0
    lost: int = 0


def run(tally: Tally, **parameters: Any) -> Any:
    tally.runs += 1
    return reconcile_positions(**parameters, return_state=True)


def clean_run(url: str, sim: Sim, tally: Tally) -> dict[str, Row]:
    """A run on good data: Completed, and the book equals the broker's list."""
    expected = live_material(sim.broker_positions())
    state = run(tally)
    assert state.is_completed(), state.message
    book = stored_rows(url)
    assert material(book) == expected
    return book


def check_bad_record(url: str, sim: Sim, tally: Tally, mode: str, field: str) -> dict[str, Row]:
    """One corrupt record: that symbol fails alone, its local row is held back as it was."""
    tally.cases += 1
    before = stored_rows(url)
    sim.step()  # so that the good records have something to apply
    live = sim.broker_positions()
    bad_raw = live[len(live) // 2]  # the simulator corrupts the middle record
    bad = bad_raw["asset_id"]
    assert bad in before, "the corrupted record must be one the book already holds"
    sim.fault(mode, path="/v2/positions", count=1)
    state = run(tally)
    assert state.is_completed(), state.message
    flow_run_id = str(state.state_details.flow_run_id)
    result = state.result()
    (error,) = result["errors"]
    assert error["symbol"] == bad_raw["symbol"].strip()
    assert field in error["error"], error
    assert result["heldBack"] == [error["symbol"]]
    assert error["symbol"] not in result["removed"]
    assert result["summary"]["errorCount"] == 1
    after = stored_rows(url)
    # Held back: not removed, not refreshed, not touched at all.
    if after.get(bad) != before[bad]:
        tally.lost += 1
    assert after[bad] == before[bad]
    tally.protected += 1
    good = {k: v for k, v in live_material(live).items() if k != bad}
    assert {k: v for k, v in material(after).items() if k != bad} == good
    # Every other row the book held is still there, or the broker no longer lists it.
    lost = [k for k in before if k not in after and k in live_material(live)]
    tally.lost += len(lost)
    assert lost == []
    (sync_run,) = runs_of(url, flow_run_id)
    assert sync_run.status == "completed" and sync_run.error_count == 1
    types = [e.type for e in events_of(url, flow_run_id)]
    assert types == ([POSITION_UPDATED] if result["summary"]["totalChanges"] else [])
    return after


def check_refused(
    url: str,
    sim: Sim,
    tally: Tally,
    *,
    expect: list[str],
    at_risk: int,
    positions_requests: int = 1,
    **parameters: Any,
) -> None:
    """A refused snapshot: Failed with a clear message, a `system:error`, nothing else written."""
    tally.cases += 1
    before = stored_rows(url)
    sim.reset_log()
    state = run(tally, **parameters)
    sim.clear_fault()
    assert state.is_failed(), state.message
    message = state.message or ""
    for text in expect:
        assert text in message, message
    assert len(sim.requests("/v2/positions")) == positions_requests
    flow_run_id = str(state.state_details.flow_run_id)
    after = stored_rows(url)
    changed = [k for k in before if after.get(k) != before[k]]
    tally.lost += len(changed)
    assert after == before, changed
    tally.protected += at_risk
    (event,) = events_of(url, flow_run_id)
    assert event.type == SYSTEM_ERROR
    assert event.payload["error"] == state.message
    assert event.payload["status"] == "failed"
    (sync_run,) = runs_of(url, flow_run_id)
    assert sync_run.status == "failed" and sync_run.reason == state.message
    assert sync_run.created_count == sync_run.updated_count == sync_run.removed_count == 0


def test_bad_data_gets_its_documented_outcome_and_no_row_is_lost(
    configured: str, sim: Sim, env: pytest.MonkeyPatch
) -> None:
    env.setenv("RECON_FETCH_RETRIES", str(FETCH_RETRIES))
    get_settings.cache_clear()
    tally = Tally(db=configured.split(":", 1)[0].split("+", 1)[0])
    book = clean_run(configured, sim, tally)
    assert len(book) >= 10

    # 1-2. One corrupt record each: an enum value alpaca-py does not know, a missing qty.
    check_bad_record(configured, sim, tally, "unknown_enum", "asset_class")
    check_bad_record(configured, sim, tally, "missing_qty", "qty")
    book = clean_run(configured, sim, tally)

    # 3. Malformed JSON on every attempt: retried as transient, then the run fails.
    sim.step()
    sim.fault("malformed_json", path="/v2/positions")
    check_refused(
        configured,
        sim,
        tally,
        expect=["positions: broker sent a body that is not valid JSON"],
        at_risk=len(book),
        positions_requests=1 + FETCH_RETRIES,
    )

    # 4. An empty list while the account still reports position value.
    sim.fault("empty_positions")
    check_refused(
        configured,
        sim,
        tally,
        expect=["broker listed no positions", "refusing to treat the account as flat"],
        at_risk=len(book),
    )

    # 5. A truncated list: the largest long position is missing, the account still counts it.
    book = clean_run(configured, sim, tally)
    live = sim.broker_positions()
    account = sim.broker("/v2/account")
    longs = [p for p in live if Decimal(p["market_value"]) > 0]
    dropped = max(longs, key=lambda p: Decimal(p["market_value"]))
    reported = Decimal(account["long_market_value"])
    listed = sum((Decimal(p["market_value"]) for p in longs if p is not dropped), Decimal(0))
    assert reported - listed > max(Decimal("1.00"), reported / 100)  # beyond the tolerance
    sim.load([p for p in live if p is not dropped], account)
    check_refused(
        configured,
        sim,
        tally,
        expect=[
            f"long positions add up to {listed:f} but the account reports {reported:f}",
            "tolerance",
        ],
        at_risk=1,
    )

    # 6. Over the absolute removal cap: three removals with RECON_MAX_REMOVALS=2.
    env.setenv("RECON_MAX_REMOVALS", "2")
    get_settings.cache_clear()
    sim.load(live[3:])  # without an account: the simulator builds one that ties out
    check_refused(
        configured,
        sim,
        tally,
        expect=[
            f"snapshot would remove 3 of {len(book)} positions",
            "over the cap of 2 or 50%",
            "allow_mass_removal=true",
        ],
        at_risk=3,
    )
    env.delenv("RECON_MAX_REMOVALS")
    get_settings.cache_clear()

    # 7. Over the percentage cap: more than half of the book, under the absolute cap.
    kept = len(book) // 2 - 1
    removing = len(book) - kept
    sim.load(live[:kept])
    check_refused(
        configured,
        sim,
        tally,
        expect=[
            f"snapshot would remove {removing} of {len(book)} positions",
            "over the cap of 25 or 50%",
            "allow_mass_removal=true",
        ],
        at_risk=removing,
    )

    # Back to the live book: the next run applies it in full.
    sim.unload()
    clean_run(configured, sim, tally)
    # Every case ran (each asserts on its own that it lost no row: a total of 0 here would
    # prove nothing more): 2 bad records, 5 refusals, 4 clean runs.
    assert (tally.cases, tally.runs) == (7, 11), tally
    print(
        f"\n[bad data] db={tally.db} cases={tally.cases} runs={tally.runs} "
        f"rows protected={tally.protected} rows lost={tally.lost}"
    )
