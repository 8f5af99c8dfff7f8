"""Running the simulated broker: in a background thread for tests, in the foreground for the CLI."""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from simulator.app import SimulatorApp, create_app
from simulator.state import SimulatorConfig

__all__ = ["SimulatorConfig", "SimulatorServer", "serve"]

logger = logging.getLogger("simulator")

STARTUP_TIMEOUT = 10.0
# Long enough for in-flight answers, short enough that a stalled request cannot hold up a test.
GRACEFUL_SHUTDOWN = 2


class _Server(uvicorn.Server):
    """uvicorn.Server that reports, once, when its sockets listen (or when it gave up)."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[_Server], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started(self)

    @property
    def port(self) -> int:
        return int(self.servers[0].sockets[0].getsockname()[1])


def _uvicorn_config(app: SimulatorApp, config: SimulatorConfig, **options: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        http="h11",  # the `drop` fault relies on the h11 cycle's transport; pin it
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        **options,
    )


class SimulatorServer:
    """The simulator on a loopback port in a background thread; use as a context manager."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or SimulatorConfig()
        self.app = create_app(self.config, monotonic=monotonic)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._port: int | None = None

    @property
    def base_url(self) -> str:
        """`http://host:port`, without `/v2` (alpaca-py appends it)."""
        if self._port is None:
            raise RuntimeError("the simulator is not running")
        return f"http://{self.config.host}:{self._port}"

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("the simulator is already running")
        options = {"log_config": None, "log_level": "warning", "access_log": False}
        server = _Server(_uvicorn_config(self.app, self.config, **options), self._started)
        self._server = server
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="alpaca-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT) or self._port is None:
            self.stop()
            raise RuntimeError(f"the simulator did not start on {self.config.host}")
        return self

    def _started(self, server: _Server) -> None:
        self._port = server.port
        self._ready.set()

    def _run(self) -> None:
        assert self._server is not None
        try:
            self._server.run()
        finally:
            # Also wakes start() when startup failed, instead of leaving it to time out.
            self._ready.set()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(STARTUP_TIMEOUT + GRACEFUL_SHUTDOWN)
        self._server = self._thread = None
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(config: SimulatorConfig, *, show_token: bool = False) -> None:
    """Run in the foreground until interrupted (the `recon simulator` command).

    `show_token`: log the control token, when it was generated here and nobody else knows it.
    """
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["simulator"] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }

    def announce(server: _Server) -> None:
        logger.info(
            "Alpaca simulator on http://%s:%d (seed %d, account %s, drift %ss)",
            config.host,
            server.port,
            config.seed,
            config.account_id,
            config.drift_seconds,
        )
        if show_token:
            logger.info("control API: Authorization: Bearer %s", config.control_token)

    app = create_app(config)
    server = _Server(_uvicorn_config(app, config, log_config=log_config), announce)
    # uvicorn re-raises Ctrl-C after its graceful shutdown; for a foreground command that is the
    # normal way to stop, not an error worth a traceback (uvicorn.run swallows it the same way).
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
