"""`recon down`: stop what `recon sync` left running in the background on the data directory.

That is the background Prefect server alone (cli/background.py). A `recon up` is a
foreground process with its own Ctrl-C: it is named, not stopped.
"""

from __future__ import annotations

import json

import typer

from cli.background import stop_server
from recon.settings import get_settings


def run_down() -> int:
    data_dir = get_settings().data_dir.resolve()
    stopped = stop_server(data_dir)
    if stopped is None:
        typer.echo(f"Nothing of recon's is running in the background on {data_dir}.")
    else:
        typer.echo(f"Stopped the background Prefect server (pid {stopped.pid}, {stopped.url}).")
    try:
        up = json.loads((data_dir / "up.json").read_text())
    except (OSError, ValueError):
        return 0
    typer.echo(f"recon up is running on {data_dir} (pid {up.get('pid', '?')}): Ctrl-C stops it.")
    return 0
