"""Checks run before anything is written; a refused snapshot fails the run, writes nothing."""

from __future__ import annotations

from decimal import Decimal

from recon.diff import Diff
from recon.errors import SnapshotRefusedError
from recon.position import decimal_text
from recon.settings import Settings
from recon.snapshot import Snapshot


def check_snapshot(snapshot: Snapshot, settings: Settings) -> None:
    """Refuse a snapshot that does not agree with the account it came with.

    The old job took an empty or truncated positions list as "the account is flat" and
    deleted the book. Here the account's own market values must be explained by the
    listed positions, long and short separately, within the configured tolerance.
    """
    account = snapshot.account
    if account.long_market_value is None or account.short_market_value is None:
        raise SnapshotRefusedError(
            "account has no long_market_value/short_market_value to check the positions against",
        )
    account_gross = abs(account.long_market_value) + abs(account.short_market_value)
    if snapshot.listed_count == 0 and account_gross != 0:
        raise SnapshotRefusedError(
            f"broker listed no positions while the account reports {decimal_text(account_gross)} "
            "of position value; refusing to treat the account as flat",
        )
    for side, listed, reported in (
        ("long", snapshot.listed_long_value, account.long_market_value),
        ("short", snapshot.listed_short_value, account.short_market_value),
    ):
        allowed = max(
            settings.tieout_tolerance_abs, abs(reported) * settings.tieout_tolerance_pct / 100
        )
        if abs(listed - reported) > allowed:
            covered = _percent(listed, reported)
            raise SnapshotRefusedError(
                f"{side} positions add up to {decimal_text(listed)} but the account reports "
                f"{decimal_text(reported)} ({covered} covered, tolerance {decimal_text(allowed)})",
            )


def check_removals(diff: Diff, book_size: int, settings: Settings, *, allow: bool) -> None:
    """Hold back a mass removal unless the operator explicitly allows it for this run."""
    count = len(diff.removed)
    if allow or count == 0:
        return
    share = Decimal(count) * 100 / book_size if book_size else Decimal(0)
    # One removal is never "mass": a one-position book must be able to close its position.
    if count > settings.max_removals or (count > 1 and share > settings.max_removal_pct):
        raise SnapshotRefusedError(
            f"snapshot would remove {count} of {book_size} positions ({share:.1f}%), over the cap "
            f"of {settings.max_removals} or {decimal_text(settings.max_removal_pct)}%; "
            "rerun with allow_mass_removal=true (recon sync --allow-mass-removal) if this is real",
        )


def _percent(part: Decimal, whole: Decimal) -> str:
    if whole == 0:
        return "n/a"
    return f"{(part / whole * 100):.1f}%"
