"""Every error the sidecar answers is JSON `{"error": ..., "message": ...}`, never a traceback.

Domain errors (`recon.errors`) are turned into HTTP answers here and nowhere else.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from recon.errors import DeploymentNotFoundError, RunFailedError, RunInProgressError

logger = logging.getLogger("recon.api")


class ApiError(Exception):
    """Raised by routes and dependencies; rendered as `{"error", "message", **extra}`."""

    def __init__(self, status_code: int, error: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "message": self.message, **self.extra}


IN_PROGRESS = "Position sync already in progress"


def from_domain(exc: Exception) -> ApiError | None:
    """The HTTP answer of a domain error, or None for one that is not an answer."""
    if isinstance(exc, DeploymentNotFoundError):
        return ApiError(503, "deployment not found", str(exc))
    if isinstance(exc, RunInProgressError):
        return ApiError(409, IN_PROGRESS, str(exc), flowRunId=exc.flow_run_id)
    if isinstance(exc, RunFailedError):
        return ApiError(
            500,
            "Position sync failed",
            str(exc),
            success=False,
            flowRunId=exc.flow_run_id,
            flowRunUrl=exc.flow_run_url,
        )
    return None


def _render(exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _render(exc)

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        answer = from_domain(exc)
        return _render(answer) if answer is not None else await unexpected(request, exc)

    for domain in (DeploymentNotFoundError, RunInProgressError, RunFailedError):
        app.add_exception_handler(domain, domain_error)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()
        ]
        body = {
            "error": "invalid request",
            "message": "the request is not valid",
            "detail": details,
        }
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = {"error": _reason(exc.status_code), "message": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with the route, not the request's headers or query (tokens live there).
        # exc_info given, not taken from sys.exc_info(): handlers run outside the except.
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        body = {"error": "internal error", "message": f"{type(exc).__name__} (see sidecar log)"}
        return JSONResponse(body, status_code=500)


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"
