"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import PrefectDep, SettingsDep
from api.schemas import Health, Readiness, ReadinessChecks
from recon.store.database import engine_for

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    """The process answers. No auth, no dependencies."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a dependency is unreachable"}},
)
async def readyz(settings: SettingsDep, prefect: PrefectDep) -> JSONResponse:
    """Ready when both the app database and the Prefect API answer."""
    database, orchestrator = await asyncio.gather(
        asyncio.to_thread(_database_ok, settings.resolved_database_url),
        _prefect_ok(prefect),
        return_exceptions=False,
    )
    checks = ReadinessChecks(database=database or "ok", prefect=orchestrator or "ok")
    ready = checks.database == checks.prefect == "ok"
    body = Readiness(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.dump(), status_code=200 if ready else 503)


def _database_ok(url: str) -> str | None:
    try:
        with engine_for(url).connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    return None


async def _prefect_ok(prefect: PrefectDep) -> str | None:
    try:
        response = await asyncio.wait_for(prefect.api_healthcheck(), timeout=3)
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    return None if response is None else f"unhealthy ({type(response).__name__})"
