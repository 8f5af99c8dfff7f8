"""The operator console: one page and its script and style, static files of the package.

No data is served here (the page asks the API with the operator's key, kept in the
browser's sessionStorage), so these answer without a key. The Content-Security-Policy
allows this origin's own script, style and API only: no inline script, no other host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.errors import ApiError

router = APIRouter(tags=["console"], include_in_schema=False)

STATIC: Final = Path(__file__).resolve().parent.parent / "console"
# The files the page is made of, by URL name, with their media type.
ASSETS: Final = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
    "stream.js": "text/javascript; charset=utf-8",
    "util.js": "text/javascript; charset=utf-8",
    "panels.js": "text/javascript; charset=utf-8",
}
CSP: Final = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


@router.get("/")
def page() -> FileResponse:
    """The console's page."""
    return FileResponse(
        STATIC / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS
    )


@router.get("/console/{asset}")
def asset(asset: str) -> FileResponse:
    """The page's script and style (only the files the page is made of)."""
    media_type = ASSETS.get(asset)
    if media_type is None:
        raise ApiError(404, "not found", "no such console file")
    return FileResponse(STATIC / asset, media_type=media_type, headers=HEADERS)
