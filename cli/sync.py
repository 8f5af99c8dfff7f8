"""`recon sync`: one reconciliation in this process, printed for a person or as JSON."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

import typer

EXIT_SKIPPED = 3  # as `recon trigger` on a 409


def run_sync(*, as_json: bool, allow_mass_removal: bool, demo: bool) -> int:
    with _demo_broker() if demo else contextlib.nullcontext():
        from flows.reconcile import reconcile_positions

        state = reconcile_positions(allow_mass_removal=allow_mass_removal, return_state=True)
        if not state.is_completed():
            reason = state.message or state.name
            if as_json:
                typer.echo(json.dumps({"success": False, "error": reason, "state": state.name}))
            elif state.is_cancelled():
                typer.secho(f"Reconciliation not run: {reason}", fg="yellow", err=True)
            else:
                typer.secho(f"Reconciliation failed: {reason}", fg="red", err=True)
            # Another sync was writing: trying again later will work.
            return EXIT_SKIPPED if state.is_cancelled() else 1
        result = state.result()
        assert isinstance(result, dict)  # a completed run returns its result dict
    typer.echo(json.dumps(result) if as_json else render(result))
    return 0


def render(result: dict[str, Any]) -> str:
    summary = result["summary"]
    market = {True: "market open", False: "market closed", None: "market state unknown"}
    lines = [
        f"Reconciled account {result['accountId']} ({market[result['marketOpen']]}): "
        f"{summary['totalChanges']} changes, {summary['unchangedCount']} unchanged, "
        f"{summary['errorCount']} errors",
    ]
    by_symbol = {(d["symbol"], d["change"]): d["fields"] for d in result["details"]}
    for kind in ("created", "updated", "removed"):
        for symbol in result[kind]:
            lines.append(
                f"  {kind:<8} {symbol:<22} {_describe(kind, by_symbol.get((symbol, kind), {}))}"
            )
    for error in result["errors"]:
        lines.append(f"  {'error':<8} {error['symbol']:<22} {error['error']}")
    for symbol in result["heldBack"]:
        lines.append(f"  {'held':<8} {symbol:<22} kept: its record failed validation")
    lines.append(f"  flow run {result['flowRunId']}, sync run {result['syncRunId']}")
    return "\n".join(lines)


def _describe(kind: str, fields: dict[str, dict[str, str | None]]) -> str:
    if kind == "updated":
        return ", ".join(
            f"{n} {v['before'] or '-'} → {v['after'] or '-'}" for n, v in fields.items()
        )
    side = "after" if kind == "created" else "before"
    qty = fields.get("qty", {}).get(side)
    price = fields.get("avg_entry_price", {}).get(side)
    return f"qty {qty} @ {price}" if kind == "created" else f"was qty {qty}"


@contextlib.contextmanager
def _demo_broker() -> Iterator[None]:
    """Start the simulated broker in this process and point the settings at it."""
    from recon.settings import get_settings
    from simulator.server import SimulatorConfig, SimulatorServer

    config = SimulatorConfig()
    with SimulatorServer(config) as server:
        os.environ.update(
            ALPACA_BASE_URL=server.base_url,
            ALPACA_API_KEY=config.api_key,
            ALPACA_SECRET_KEY=config.secret_key,
        )
        get_settings.cache_clear()
        yield
