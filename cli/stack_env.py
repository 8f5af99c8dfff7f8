"""The environment of each child of `recon up`: each gets what it needs and no more.

The Prefect server gets an API auth string, CSRF protection and a CORS origin list (its
defaults are no auth, no CSRF check, CORS `*`: any local process or web page could create,
pause or delete runs). Every Prefect client gets the auth string. Only the runner, whose
flow runs call the broker, gets the Alpaca keys. Kept free of heavy imports: `recon`
commands read the auth string here before Prefect is imported.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

AUTH_FILE = "prefect-auth"
SIMULATOR_TOKEN_FILE = "simulator-token"  # noqa: S105 - a file name
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
# Variables that carry broker credentials or configuration: the runner's alone.
BROKER_PREFIX = "ALPACA_"


def auth_string(data_dir: Path) -> str:
    """The data directory's Prefect API auth string, created (mode 0600) on first use.

    Kept across restarts, so an operator's exported PREFECT_API_AUTH_STRING keeps working.
    """
    path = data_dir / AUTH_FILE
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        path.chmod(0o600)
        return existing
    value = secrets.token_urlsafe(32)
    write_secret(path, value)
    return value


def write_secret(path: Path, value: str) -> None:
    """Replace `path` with `value`, mode 0600 from the first byte (no window where the
    file exists readable by others)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")


def read_auth_string(data_dir: Path) -> str | None:
    """The auth string of a `recon up` on this data directory, if there is one."""
    try:
        return (data_dir / AUTH_FILE).read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class StackEnv:
    """Builds the per-child environments from `recon up`'s own."""

    base: dict[str, str]
    data_dir: Path
    prefect_url: str  # http://127.0.0.1:<port>, the UI's origin
    auth: str
    database_url: str
    prefect_database_url: str | None = None

    def _common(self) -> dict[str, str]:
        env = {k: v for k, v in self.base.items() if not k.startswith(BROKER_PREFIX)}
        env.update(
            RECON_DATA_DIR=str(self.data_dir),
            PREFECT_HOME=str(self.data_dir / "prefect"),
            PREFECT_API_URL=f"{self.prefect_url}/api",
            PREFECT_API_AUTH_STRING=self.auth,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_LOGGING_LEVEL="INFO",
        )
        return env

    def server(self) -> dict[str, str]:
        env = self._common()
        env.pop("RECON_DATABASE_URL", None)  # the server has no business with the app database
        env.update(
            PREFECT_SERVER_API_AUTH_STRING=self.auth,
            PREFECT_SERVER_CSRF_PROTECTION_ENABLED="true",
            # The UI is served from the API's own origin; no other page may call the API.
            PREFECT_SERVER_CORS_ALLOWED_ORIGINS=self.prefect_url,
            # Leases in files survive a server restart; in memory (the default) a restart
            # can leak the deployment's only slot for good.
            PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=LEASE_STORAGE,
            PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED="events,flow_runs",
        )
        if self.prefect_database_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.prefect_database_url
        return env

    def runner(self, broker: dict[str, str]) -> dict[str, str]:
        """`recon serve`; its flow runs inherit this environment, keys included."""
        return self._common() | {"RECON_DATABASE_URL": self.database_url} | broker

    def sidecar(self) -> dict[str, str]:
        return self._common() | {"RECON_DATABASE_URL": self.database_url}

    def simulator(self, control_token: str) -> dict[str, str]:
        env = self._common()
        env.pop("RECON_DATABASE_URL", None)
        return env | {"RECON_SIMULATOR_TOKEN": control_token}

    def operator_exports(self) -> list[str]:
        """What an operator's shell needs for the Prefect CLI against this server."""
        return [
            f"export PREFECT_API_URL={self.prefect_url}/api",
            f"export PREFECT_API_AUTH_STRING=$(cat {self.data_dir / AUTH_FILE})",
        ]
