"""The one environment scrub, and the environments of a test stack's processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

OURS = ("ALPACA_", "RECON_")  # what Settings reads: a test sets these itself
KEEP = frozenset({"RECON_TEST_POSTGRES_URL"})  # where the test PostgreSQL is, not a setting


def is_ours(name: str, prefixes: tuple[str, ...] = OURS) -> bool:
    """Whether a variable must not leak from the developer's shell into a test."""
    return name.startswith(prefixes) and name not in KEEP


def scrubbed_env(prefixes: tuple[str, ...] = OURS) -> dict[str, str]:
    """This process's environment without the variables named by `prefixes`."""
    return {k: v for k, v in os.environ.items() if not is_ours(k, prefixes)}


def base_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """A child with a Prefect home of its own (no profile, no API URL of the shell's)."""
    env = scrubbed_env((*OURS, "PREFECT_")) | {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": (
            "prefect.server.concurrency.lease_storage.filesystem"
        ),
    }
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def stack_env(root: Path, api_url: str, simulator: Any, database_url: str) -> dict[str, str]:
    """Environment of a `recon serve` / `recon api` process of a test stack; `simulator` is
    a running `SimulatorServer`."""
    return base_env(root / "home", api_url) | {
        "ALPACA_BASE_URL": simulator.base_url,
        "ALPACA_API_KEY": simulator.config.api_key,
        "ALPACA_SECRET_KEY": simulator.config.secret_key,
        "RECON_DATABASE_URL": database_url,
        "RECON_DATA_DIR": str(root),
        "RECON_FETCH_RETRIES": "0",
        "RECON_HTTP_TIMEOUT_SECONDS": "30",
    }
