"""One Settings object for every process: flows, sidecar and CLI read the same environment."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from recon.errors import ConfigurationError


class Settings(BaseSettings):
    """Read from the environment and `.env`.

    Alpaca's own variable names are kept without a prefix so an existing `.env` of an
    Alpaca app works as it is; everything of ours starts with `RECON_`.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    alpaca_api_key: SecretStr | None = Field(default=None, alias="ALPACA_API_KEY")
    alpaca_secret_key: SecretStr | None = Field(default=None, alias="ALPACA_SECRET_KEY")
    alpaca_paper: bool = Field(default=True, alias="ALPACA_PAPER")
    alpaca_base_url: str | None = Field(default=None, alias="ALPACA_BASE_URL")

    data_dir: Path = Field(default=Path(".recon"), alias="RECON_DATA_DIR")
    database_url: str | None = Field(default=None, alias="RECON_DATABASE_URL")

    # alpaca-py sets no timeout at all; a stalled socket would hang the run forever.
    http_timeout_seconds: float = Field(default=10.0, gt=0, alias="RECON_HTTP_TIMEOUT_SECONDS")
    fetch_retries: int = Field(default=4, ge=0, alias="RECON_FETCH_RETRIES")
    fetch_backoff_seconds: float = Field(default=1.0, ge=0, alias="RECON_FETCH_BACKOFF_SECONDS")

    # Tie-out: |sum(position market values) - account market value| must be within
    # max(absolute, percent of the account value); prices move between the two reads.
    tieout_tolerance_abs: Decimal = Field(
        default=Decimal("1.00"), ge=0, alias="RECON_TIEOUT_TOLERANCE_ABS"
    )
    tieout_tolerance_pct: Decimal = Field(
        default=Decimal("1.0"), ge=0, alias="RECON_TIEOUT_TOLERANCE_PCT"
    )

    # Removal cap: a run that would remove more than either limit is refused unless overridden.
    max_removals: int = Field(default=25, ge=0, alias="RECON_MAX_REMOVALS")
    max_removal_pct: Decimal = Field(
        default=Decimal("50"), ge=0, le=100, alias="RECON_MAX_REMOVAL_PCT"
    )

    # The local stack (`recon up`): ports on 127.0.0.1 and the Prefect server's own database.
    prefect_port: int = Field(default=4200, alias="RECON_PREFECT_PORT")
    prefect_database_url: str | None = Field(default=None, alias="RECON_PREFECT_DATABASE_URL")
    api_port: int = Field(default=5000, alias="RECON_API_PORT")
    simulator_port: int = Field(default=8765, alias="RECON_SIMULATOR_PORT")
    # Flow-run heartbeats feed zombie detection (Prefect's minimum interval is 30 s).
    heartbeat_seconds: int = Field(default=30, ge=30, alias="RECON_HEARTBEAT_SECONDS")
    startup_delay_seconds: float = Field(default=10.0, ge=0, alias="RECON_STARTUP_DELAY_SECONDS")

    # The sidecar, and the CLI commands that talk to it.
    api_cors_origins: list[str] = Field(default_factory=list, alias="RECON_API_CORS_ORIGINS")
    api_url: str = Field(default="http://127.0.0.1:5000", alias="RECON_API_URL")
    api_token: SecretStr | None = Field(default=None, alias="RECON_API_TOKEN")
    trigger_wait_seconds: float = Field(
        default=60.0, ge=0, le=600, alias="RECON_TRIGGER_WAIT_SECONDS"
    )
    prefect_ui_url: str | None = Field(default=None, alias="RECON_PREFECT_UI_URL")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'recon.db').resolve()}"

    def alpaca_credentials(self) -> tuple[str, str]:
        """The key pair, or a clear error: never a silent switch to fake data."""
        key = self.alpaca_api_key.get_secret_value() if self.alpaca_api_key else ""
        secret = self.alpaca_secret_key.get_secret_value() if self.alpaca_secret_key else ""
        missing = [
            name
            for name, value in (("ALPACA_API_KEY", key), ("ALPACA_SECRET_KEY", secret))
            if not value
        ]
        if missing:
            raise ConfigurationError(
                f"missing {' and '.join(missing)}: set them in the environment or .env "
                "(use `recon up --demo` to run against the simulated broker)"
            )
        return key, secret


@lru_cache
def get_settings() -> Settings:
    return Settings()
