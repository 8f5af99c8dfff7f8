"""Process environment the CLI sets up before Prefect is imported (Prefect reads it at import)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx


def prepare_environment() -> None:
    """Keep Prefect's home, database and results under the project's data directory.

    Only defaults: anything the operator exported (PREFECT_HOME, PREFECT_API_URL...) wins.
    """
    data_dir = Path(os.environ.get("RECON_DATA_DIR", ".recon")).resolve()
    os.environ.setdefault("PREFECT_HOME", str(data_dir / "prefect"))
    # Prefect's server exits (code 3) instead of creating a missing home for its database.
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if "PREFECT_API_URL" not in os.environ:
        # A `recon up` on this data directory: use its server (runs show in its UI) rather
        # than an ephemeral one sharing the same Prefect database file.
        running = _running_server(data_dir)
        if running:
            os.environ["PREFECT_API_URL"] = running
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _running_server(data_dir: Path) -> str | None:
    try:
        urls = json.loads((data_dir / "up.json").read_text())["urls"]
        api = f"{urls['prefect'].rstrip('/')}/api"
        healthy = httpx.get(f"{api}/health", timeout=1.0).status_code == 200
    except (OSError, ValueError, KeyError, TypeError, httpx.HTTPError):
        return None
    return api if healthy else None
