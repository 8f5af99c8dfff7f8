"""`recon listen`: the fill listener in the foreground (`recon up` runs it as a child)."""

from __future__ import annotations

import asyncio
import logging
import os

import typer

from recon.errors import ConfigurationError
from recon.settings import get_settings


def run_listen() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if os.environ.get("RECON_LOG_FILL_TIMINGS"):  # one JSON line per batch (make bench)
        logging.getLogger("recon.listener.timings").setLevel(logging.DEBUG)
    settings = get_settings()
    try:
        if settings.source == "broker":
            settings.broker_credentials()
        else:
            settings.alpaca_credentials()
    except ConfigurationError as exc:
        typer.secho(f"recon listen: {exc}", fg="red", err=True)
        return 1
    from flows.listener import listen

    asyncio.run(listen(settings))
    return 0
