"""Request limits, checked before routing: an oversized request gets a JSON 4xx.

uvicorn's h11 parser only bounds a header block that arrives in pieces; one sent in a
single write of any size reaches the app. The sidecar's own requests are small (a token,
an event id), so anything past these limits is a mistake or an attack.

A NUL character in the path or query is refused too: no account id or symbol holds one,
and PostgreSQL text cannot (the query would fail as a database error).
"""

from __future__ import annotations

from typing import Final

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

MAX_HEADER_BYTES: Final = 16 * 1024
MAX_QUERY_BYTES: Final = 8 * 1024


class RequestLimits:
    """Pure ASGI middleware (no body buffering, so the SSE stream is untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = sum(len(name) + len(value) for name, value in scope["headers"])
            if headers > MAX_HEADER_BYTES:
                await _too_large(431, "request header fields too large", MAX_HEADER_BYTES)(
                    scope, receive, send
                )
                return
            query = scope.get("query_string", b"")
            if len(query) > MAX_QUERY_BYTES:
                await _too_large(414, "query string too long", MAX_QUERY_BYTES)(
                    scope, receive, send
                )
                return
            if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
                refused = JSONResponse(
                    {"error": "invalid character", "message": "NUL is not allowed in a URL"},
                    status_code=400,
                )
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _too_large(status: int, error: str, limit: int) -> JSONResponse:
    return JSONResponse(
        {"error": error, "message": f"the limit is {limit // 1024} KiB"}, status_code=status
    )
