"""Run an ASGI app under a real uvicorn server on a loopback port, in a background thread;
and the journal rows and API keys its tests need."""

from __future__ import annotations

import contextvars
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from httpx_sse import EventSource, connect_sse
from sqlalchemy import Engine, event
from sse_starlette.sse import AppStatus

from api.errors import install_error_handlers
from api.relay import RECENT_BYTES, JournalRelay
from api.routes import stream
from recon.keys import create_key
from recon.store.database import session_factory
from recon.store.journal import POSITION_UPDATED, append_event
from tests.support.wait import wait_until

STREAM_PATH = "/api/stream/events"


def stream_app(
    database_url: str,
    *,
    poll_interval: float,
    ping_interval: float,
    recent_bytes: int = RECENT_BYTES,
) -> FastAPI:
    """The stream route and its relay alone: what `api.main` wires, minus Prefect."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        relay = JournalRelay(
            database_url,
            poll_interval=poll_interval,
            ping_interval=ping_interval,
            recent_bytes=recent_bytes,
        )
        app.state.relay = relay
        await relay.start()
        try:
            yield
        finally:
            await relay.stop()

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(stream.router)
    return app


@dataclass
class RunningServer:
    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread
    base_url: str

    @property
    def relay(self) -> JournalRelay:
        relay: JournalRelay = self.app.state.relay
        return relay

    def signal_shutdown(self) -> None:
        """What uvicorn's SIGTERM handler does: `handle_exit`, which sse-starlette wraps to
        flag its streams (signal handlers are only installed on the main thread)."""
        self.server.handle_exit(signal.SIGTERM, None)

    def join(self, timeout: float = 15.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the server did not shut down"


@contextmanager
def serve(app: FastAPI) -> Iterator[RunningServer]:
    # Port 0: the kernel picks a free port, read back once the server listens.
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    # In this thread's context: Prefect's settings (the test server's URL) live in a
    # context variable, which a new thread would not otherwise see.
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(server.run,), name="uvicorn-test", daemon=True
    )
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 30, "uvicorn to start")
        assert server.started, "uvicorn failed to start (see its log)"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield RunningServer(app, server, thread, f"http://127.0.0.1:{port}")
    finally:
        if thread.is_alive():
            server.handle_exit(signal.SIGTERM, None)
            thread.join(15)
        # sse-starlette's shutdown flag is process-global and never reset: left set, every
        # stream of the next server in this process would end at once.
        AppStatus.should_exit = False


def append_rows(url: str, count: int = 1, *, type: str = POSITION_UPDATED) -> list[int]:
    """Commit `count` journal rows in one transaction; return their ids. The payload has no
    flowRunId: the stream must add it from the row."""
    with session_factory(url).begin() as session:
        return [
            append_event(
                session,
                type=type,
                payload={"created": [{"symbol": "AAPL", "qty": "1.50"}], "seq": n},
                account_id="acct-1",
                flow_run_id="flow-7",
            )
            for n in range(count)
        ]


def make_key(url: str, capabilities: list[str], name: str = "ui") -> str:
    with session_factory(url).begin() as session:
        return create_key(session, name, capabilities)


@contextmanager
def open_stream(
    base_url: str, headers: dict[str, str] | None = None, params: dict[str, str] | None = None
) -> Iterator[EventSource]:
    """A real SSE client on the stream; reads time out (and fail the test) after 10 s."""
    with (
        httpx.Client(base_url=base_url, timeout=10.0) as client,
        connect_sse(client, "GET", STREAM_PATH, headers=headers, params=params) as source,
    ):
        yield source


def auth(token: str, last_id: int | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    return headers


@contextmanager
def count_selects(engine: Engine, table: str) -> Iterator[list[str]]:
    """Record every SELECT on `table` that `engine` runs (from any thread) meanwhile."""
    selects: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and table in statement:
            selects.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield selects
    finally:
        event.remove(engine, "before_cursor_execute", record)
