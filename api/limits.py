"""Request-size limits, checked before routing: an oversized request gets a JSON 4xx.

uvicorn's h11 parser only bounds a header block that arrives in pieces; one sent in a
single write of any size reaches the app. The sidecar's own requests are small (a token,
an event id), so anything past these limits is a mistake or an attack.
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
                await _refuse(431, "request header fields too large", MAX_HEADER_BYTES)(
                    scope, receive, send
                )
                return
            if len(scope.get("query_string", b"")) > MAX_QUERY_BYTES:
                await _refuse(414, "query string too long", MAX_QUERY_BYTES)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _refuse(status: int, error: str, limit: int) -> JSONResponse:
    return JSONResponse(
        {"error": error, "message": f"the limit is {limit // 1024} KiB"}, status_code=status
    )
