"""One Settings object for every process: flows, sidecar and CLI read the same environment."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    # The trade_updates websocket; unset, it follows ALPACA_BASE_URL, else ALPACA_PAPER.
    alpaca_stream_url: str | None = Field(default=None, alias="ALPACA_STREAM_URL")
    # Where snapshots come from: one trading account (its key pair above), or every account
    # of a correspondent through the Broker API (the broker key pair below).
    source: Literal["trading", "broker"] = Field(default="trading", alias="RECON_SOURCE")
    alpaca_broker_api_key: SecretStr | None = Field(default=None, alias="ALPACA_BROKER_API_KEY")
    alpaca_broker_secret_key: SecretStr | None = Field(
        default=None, alias="ALPACA_BROKER_SECRET_KEY"
    )
    alpaca_broker_sandbox: bool = Field(default=True, alias="ALPACA_BROKER_SANDBOX")
    alpaca_broker_base_url: str | None = Field(default=None, alias="ALPACA_BROKER_BASE_URL")
    # Comma-separated; empty: every ACTIVE account the Broker API lists.
    account_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="RECON_ACCOUNT_IDS"
    )
    # Broker API requests per minute this installation allows itself (one Prefect global
    # rate limit shared by every process); at most this many are sent in any minute.
    broker_rate_limit: int = Field(default=1000, ge=1, alias="RECON_BROKER_RATE_LIMIT")
    # A 429 is waited out until X-RateLimit-Reset, at most this long and this often.
    rate_limit_max_wait_seconds: float = Field(
        default=60.0, gt=0, alias="RECON_RATE_LIMIT_MAX_WAIT_SECONDS"
    )
    rate_limit_max_waits: int = Field(default=20, ge=0, alias="RECON_RATE_LIMIT_MAX_WAITS")
    # Accounts reconciled at once in broker mode (task runner threads); each holds up to two
    # database connections (its lock and its transaction): `engine_for`'s pool allows 40.
    broker_parallelism: int = Field(default=8, ge=1, le=20, alias="RECON_BROKER_PARALLELISM")
    # Broker mode: accounts per task run (each still its own unit), and task runs mapped at
    # once (a settled window's futures are dropped).
    broker_batch_size: int = Field(default=20, ge=1, le=1000, alias="RECON_BROKER_BATCH_SIZE")
    broker_map_window: int = Field(default=64, ge=1, alias="RECON_BROKER_MAP_WINDOW")
    # Broker mode: accounts of a batch fetched on one rate-limit acquisition (their
    # requests back to back, then each account applied in turn).
    broker_fetch_group: int = Field(default=5, ge=1, le=50, alias="RECON_BROKER_FETCH_GROUP")
    # Broker mode: split each pass into this many child runs of `reconcile-positions/shard`.
    shards: int = Field(default=1, ge=1, le=64, alias="RECON_SHARDS")
    # Broker mode's fill listener (`/v2/events/trades`): after a restart the replay starts this
    # long before the last applied event (Alpaca orders events per account only); a stream
    # quiet this long is reconnected (a silently dead connection would otherwise hang).
    events_resume_seconds: float = Field(default=60.0, ge=0, alias="RECON_EVENTS_RESUME_SECONDS")
    events_idle_timeout_seconds: float = Field(
        default=300.0, gt=0, alias="RECON_EVENTS_IDLE_TIMEOUT_SECONDS"
    )
    # How long a fill batch waits for a full run to release the sync lock.
    fill_lock_wait_seconds: float = Field(default=120.0, gt=0, alias="RECON_FILL_LOCK_WAIT_SECONDS")

    data_dir: Path = Field(default=Path(".recon"), alias="RECON_DATA_DIR")
    # Database URLs can carry a password: secret, so no repr, log or dump shows them.
    database_url: SecretStr | None = Field(default=None, alias="RECON_DATABASE_URL")

    # alpaca-py sets no timeout at all; a stalled socket would hang the run forever.
    http_timeout_seconds: float = Field(default=10.0, gt=0, alias="RECON_HTTP_TIMEOUT_SECONDS")
    fetch_retries: int = Field(default=4, ge=0, alias="RECON_FETCH_RETRIES")
    fetch_backoff_seconds: float = Field(default=1.0, ge=0, alias="RECON_FETCH_BACKOFF_SECONDS")

    # Tie-out, long and short side each: |listed positions' market value - the account's
    # long (short) market value| must be within max(absolute, percent of that side's own
    # reported value); prices move between the two reads (recon/safety.py).
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
    prefect_database_url: SecretStr | None = Field(default=None, alias="RECON_PREFECT_DATABASE_URL")
    # `recon sync` with no Prefect API: keep a server in the background (cli/background.py).
    background_server: bool = Field(default=True, alias="RECON_BACKGROUND_SERVER")
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
    # Bounds on what one request may read (docs/api.md, Limits).
    positions_limit_default: int = Field(default=1000, ge=1, alias="RECON_POSITIONS_LIMIT_DEFAULT")
    positions_limit_max: int = Field(default=5000, ge=1, alias="RECON_POSITIONS_LIMIT_MAX")
    stream_max_connections: int = Field(default=2000, ge=1, alias="RECON_STREAM_MAX_CONNECTIONS")
    stream_max_connections_per_key: int = Field(
        default=500, ge=1, alias="RECON_STREAM_MAX_CONNECTIONS_PER_KEY"
    )
    stream_replay_rows_per_second: int = Field(
        default=5000, ge=1, alias="RECON_STREAM_REPLAY_ROWS_PER_SECOND"
    )
    # Open streams re-check their key this often: a revoked key's streams end within it
    # (well inside the 15 s ping interval).
    stream_key_check_seconds: float = Field(
        default=5.0, gt=0, le=15, alias="RECON_STREAM_KEY_CHECK_SECONDS"
    )
    # The status's Prefect reads are kept until a Prefect event says they changed, and
    # never longer than this (what no event announces); 0 reads Prefect on every call.
    status_cache_seconds: float = Field(default=10.0, ge=0, alias="RECON_STATUS_CACHE_SECONDS")

    @field_validator("account_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("alpaca_base_url", "alpaca_broker_base_url")
    @classmethod
    def _https_unless_loopback(cls, value: str | None, info: ValidationInfo) -> str | None:
        """The keys travel in headers of every request: plain http only to this machine."""
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme == "https" and parts.hostname:
            return value
        if parts.scheme == "http" and _is_loopback(parts.hostname or ""):
            return value
        shown = f"{parts.scheme or '?'}://{parts.hostname or '?'}"  # no path, no userinfo
        name = (info.field_name or "alpaca_base_url").upper()
        raise ValueError(
            f"{name} must be https:// (http:// only for a loopback address such as "
            f"the simulator's 127.0.0.1), got {shown}"
        )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url and self.database_url.get_secret_value():
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'recon.db').resolve()}"

    @property
    def resolved_stream_url(self) -> str:
        if self.alpaca_stream_url:
            return self.alpaca_stream_url
        if self.alpaca_base_url:
            base = self.alpaca_base_url.rstrip("/")
            return "ws" + base.removeprefix("http") + "/stream"
        host = "paper-api" if self.alpaca_paper else "api"
        return f"wss://{host}.alpaca.markets/stream"

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

    def broker_credentials(self) -> tuple[str, str]:
        """The Broker API key pair (HTTP Basic), or a clear error."""
        key = self.alpaca_broker_api_key.get_secret_value() if self.alpaca_broker_api_key else ""
        secret = (
            self.alpaca_broker_secret_key.get_secret_value()
            if self.alpaca_broker_secret_key
            else ""
        )
        missing = [
            name
            for name, value in (
                ("ALPACA_BROKER_API_KEY", key),
                ("ALPACA_BROKER_SECRET_KEY", secret),
            )
            if not value
        ]
        if missing:
            raise ConfigurationError(
                f"RECON_SOURCE=broker needs {' and '.join(missing)}: set them in the "
                "environment or .env (use `recon simulator --accounts N` for a simulated one)"
            )
        return key, secret


_override: ContextVar[Settings | None] = ContextVar("recon_settings_override", default=None)


class _SettingsSource:
    """`get_settings()`: the environment's Settings, read once per process, unless a
    `use_settings` block in this context (thread, task) says otherwise."""

    def __call__(self) -> Settings:
        return _override.get() or _from_environment()

    def cache_clear(self) -> None:
        """Read the environment again at the next call (tests change it)."""
        _from_environment.cache_clear()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache
def _from_environment() -> Settings:
    return Settings()


get_settings = _SettingsSource()


@contextmanager
def use_settings(settings: Settings) -> Iterator[Settings]:
    """Make `get_settings()` answer `settings` inside the block, in this context only:
    nothing of the process (os.environ, the cached Settings) changes."""
    token = _override.set(settings)
    try:
        yield settings
    finally:
        _override.reset(token)
