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
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
