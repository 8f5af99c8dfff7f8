"""Process environment the CLI sets up before Prefect is imported (Prefect reads it at import)."""

from __future__ import annotations

import os
from pathlib import Path


def prepare_environment() -> None:
    """Keep Prefect's home, database and results under the project's data directory.

    Only defaults: anything the operator exported (PREFECT_HOME, PREFECT_API_URL...) wins.
    """
    data_dir = Path(os.environ.get("RECON_DATA_DIR", ".recon")).resolve()
    os.environ.setdefault("PREFECT_HOME", str(data_dir / "prefect"))
    # Prefect's server exits (code 3) instead of creating a missing home for its database.
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
