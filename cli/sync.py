"""`recon sync`: one reconciliation in this process, printed for a person or as JSON."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import typer

from recon.schemas.result import ChangeKind, FieldChange, PreviewReport, RunReport

EXIT_SKIPPED = 3  # as `recon trigger` on a 409


def run_sync(*, as_json: bool, allow_mass_removal: bool, demo: bool, dry_run: bool = False) -> int:
    with _demo_broker() if demo else contextlib.nullcontext():
        from flows.reconcile import reconcile_positions

        _audit(dry_run=dry_run, allow_mass_removal=allow_mass_removal)
        state = reconcile_positions(
            allow_mass_removal=allow_mass_removal, dry_run=dry_run, return_state=True
        )
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
        answer = state.result()
        if dry_run:
            preview = PreviewReport.model_validate(answer)
            typer.echo(json.dumps(preview.dump()) if as_json else render_preview(preview))
            return 0
        if isinstance(answer, dict) and answer.get("source") == "broker":
            # The Broker API mode: the per-account outcomes (docs/accounts.md).
            typer.echo(json.dumps(answer) if as_json else render_accounts(answer))
            return 0
        # A completed run returns its report as JSON (`RunResult.dump()`), bounded: a
        # large run's lists and details are read back whole from the journal.
        result = _whole(RunReport.model_validate(answer))
    typer.echo(json.dumps(result.dump()) if as_json else render(result))
    return 0


def exit_at_once(code: int) -> NoReturn:
    """End the process once its exit handlers have run (Prefect's among them: they drain its
    log and event workers), without the interpreter's teardown of the ≈ 2,000 modules a run
    imports: 0.6 to 1 s of a one-shot `recon sync` that does nothing for the run. Under a
    profiler (`benchmarks --profile`) the normal exit, so that it can write its file."""
    if sys.getprofile() is not None:
        raise SystemExit(code)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _audit(*, dry_run: bool, allow_mass_removal: bool) -> None:
    """The command line's trigger in the audit table (actor `cli`: it holds no key)."""
    from recon.settings import get_settings
    from recon.store.audit import CLI_ACTOR, AuditAction, record
    from recon.store.database import session_factory, upgrade

    url = get_settings().resolved_database_url
    upgrade(url)
    action: AuditAction = "preview" if dry_run else "override" if allow_mass_removal else "sync"
    with session_factory(url).begin() as session:
        record(
            session,
            actor=CLI_ACTOR,
            action=action,
            subject="sync-positions",
            detail={"dryRun": dry_run, "allowMassRemoval": allow_mass_removal, "via": "cli"},
        )


def render_preview(preview: PreviewReport) -> str:
    """What a run would do, as `render` prints a run, headed PREVIEW and with its verdict."""
    lines = render(preview).splitlines()
    lines[0] = "PREVIEW (nothing written): " + lines[0].replace("Reconciled", "would reconcile")
    lines = lines[:-1]  # no sync run: nothing was recorded
    if preview.refused:
        lines.append(f"  REFUSED ({preview.refused.check}): {preview.refused.reason}")
    else:
        lines.append("  would apply (no check refuses it)")
    lines.append(f"  flow run {preview.flow_run_id}")
    return "\n".join(lines)


def render_accounts(answer: dict[str, Any]) -> str:
    counts = answer["accounts"]
    lines = [
        f"Reconciled {counts['total']} accounts: {counts['applied']} applied, "
        f"{counts['failed']} failed; {answer['createdCount']} created, "
        f"{answer['updatedCount']} updated, {answer['removedCount']} removed"
    ]
    lines += [f"  failed   {f['accountId']}  {f['error']}" for f in counts["failedAccounts"]]
    lines.append(f"  flow run {answer['flowRunId']}")
    return "\n".join(lines)


def _whole(report: RunReport) -> RunReport:
    if not report.truncated:
        return report
    from recon.settings import get_settings
    from recon.store.database import session_factory
    from recon.store.runs import full_report

    return full_report(session_factory(get_settings().resolved_database_url), report)


def render(result: RunReport) -> str:
    summary = result.summary
    market = {True: "market open", False: "market closed", None: "market state unknown"}
    lines = [
        f"Reconciled account {result.account_id} ({market[result.market_open]}): "
        f"{summary.total_changes} changes, {summary.unchanged_count} unchanged, "
        f"{summary.error_count} errors",
    ]
    by_symbol = {(d["symbol"], d["change"]): d["fields"] for d in result.details}
    kinds: dict[ChangeKind, list[str]] = {
        "created": result.created,
        "updated": result.updated,
        "removed": result.removed,
    }
    for kind, symbols in kinds.items():
        for symbol in symbols:
            lines.append(
                f"  {kind:<8} {symbol:<22} {_describe(kind, by_symbol.get((symbol, kind), {}))}"
            )
    for error in result.errors:
        lines.append(f"  {'error':<8} {error.symbol:<22} {error.error}")
    for symbol in result.held_back:
        lines.append(f"  {'held':<8} {symbol:<22} kept: its record failed validation")
    lines.append(f"  flow run {result.flow_run_id}, sync run {result.sync_run_id}")
    return "\n".join(lines)


def _describe(kind: str, fields: dict[str, FieldChange]) -> str:
    if kind == "updated":
        return ", ".join(
            f"{n} {v['before'] or '-'} → {v['after'] or '-'}" for n, v in fields.items()
        )

    def value(name: str) -> str | None:
        change = fields.get(name)
        if change is None:
            return None
        return change["after"] if kind == "created" else change["before"]

    qty, price = value("qty"), value("avg_entry_price")
    return f"qty {qty} @ {price}" if kind == "created" else f"was qty {qty}"


@contextlib.contextmanager
def _demo_broker() -> Iterator[None]:
    """Start the simulated broker in this process and point this run's settings at it
    (the process environment is left as it is)."""
    from pydantic import SecretStr

    from recon.settings import get_settings, use_settings
    from simulator.server import SimulatorConfig, SimulatorServer

    config = SimulatorConfig()
    with SimulatorServer(config) as server:
        demo = get_settings().model_copy(
            update={
                "alpaca_base_url": server.base_url,
                "alpaca_api_key": SecretStr(config.api_key),
                "alpaca_secret_key": SecretStr(config.secret_key),
            }
        )
        with use_settings(demo):
            yield
