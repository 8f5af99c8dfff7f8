"""Process environment the CLI sets up before Prefect is imported (Prefect reads it at import).

Run from the Typer callback (`cli.main`), never at import: importing the CLI has no effects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx

from cli.stack_env import read_auth_string
from recon.settings import Settings


def prepare_environment(settings: Settings) -> None:
    """Keep Prefect's home, database and results under the project's data directory
    (`RECON_DATA_DIR`, from the environment or `.env`, read through Settings).

    Only defaults: anything the operator exported (PREFECT_HOME, PREFECT_API_URL...) wins.
    """
    data_dir = settings.data_dir.resolve()
    os.environ.setdefault("PREFECT_HOME", str(data_dir / "prefect"))
    # Prefect's server exits (code 3) instead of creating a missing home for its database.
    # 0700: the data directory holds the databases and `recon up`'s auth string.
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    Path(os.environ["PREFECT_HOME"]).mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if "PREFECT_API_URL" not in os.environ:
        # A `recon up` on this data directory: use its server (runs show in its UI) rather
        # than an ephemeral one sharing the same Prefect database file.
        running = _running_server(data_dir)
        if running:
            os.environ["PREFECT_API_URL"] = running
            auth = read_auth_string(data_dir)  # its API refuses requests without it
            if auth:
                os.environ.setdefault("PREFECT_API_AUTH_STRING", auth)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _running_server(data_dir: Path) -> str | None:
    try:
        urls = json.loads((data_dir / "up.json").read_text())["urls"]
        api = f"{urls['prefect'].rstrip('/')}/api"
        healthy = httpx.get(f"{api}/health", timeout=1.0).status_code == 200
    except (OSError, ValueError, KeyError, TypeError, httpx.HTTPError):
        return None
    return api if healthy else None
