"""No secret anywhere: distinctive Alpaca keys and API tokens, then grep everything produced."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter
from sqlalchemy import MetaData, select

from recon.deployment import FULL_NAME
from recon.keys import create_key
from recon.store.database import engine_for, session_factory
from simulator.server import SimulatorConfig, SimulatorServer
from tests.conftest import DATABASES, app_database
from tests.live import Process, base_env, free_port, prefect_api, stack_env, wait_for
from tests.sim import Sim

KEY_ID = "PKZZTOPSECRETKEYID42"
SECRET = "sk-live-XYZZY-do-not-leak-0b1c2d3e4f"
NO_SCHEDULER = {"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"}


@pytest.fixture(scope="module", params=DATABASES)
def secret_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("secrets")
    config = SimulatorConfig(api_key=KEY_ID, secret_key=SECRET, seed=11)
    with (
        app_database(request.param, root) as url,
        SimulatorServer(config) as simulator,
        # No cron runs: one falling due while the test triggers would answer it 409.
        prefect_api(root, env=base_env(root / "home") | NO_SCHEDULER) as server,
    ):
        with session_factory(url).begin() as session:
            token = create_key(session, "ops", ["admin:read", "admin:write", "events:read"])
        env = stack_env(root, server.api_url, simulator, url) | {"RECON_TRIGGER_WAIT_SECONDS": "60"}
        port = free_port()
        runner = Process(["cli", "serve"], env, root / "runner.log")
        sidecar = Process(["cli", "api", "--port", str(port)], env, root / "sidecar.log")
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _ready(base), 90, "the sidecar")
            yield {
                "db": request.param,
                "root": root,
                "url": url,
                "base": base,
                "token": token,
                "sim": Sim(simulator.base_url, KEY_ID, SECRET),
            }
        finally:
            sidecar.stop()
            runner.stop()


def _ready(base: str) -> bool:
    try:
        if httpx.get(f"{base}/readyz", timeout=2).status_code != 200:
            return False
    except httpx.HTTPError:
        return False
    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(FULL_NAME) is not None
        except Exception:
            return False


def test_no_log_parameter_artifact_event_error_or_row_holds_a_secret(
    secret_stack: dict[str, Any],
) -> None:
    token, base, sim = secret_stack["token"], secret_stack["base"], secret_stack["sim"]
    answers: list[str] = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=90) as c:
        succeeded = c.post("/api/admin/jobs/sync-positions")
        assert succeeded.status_code == 200, succeeded.text
        answers.append(succeeded.text)
        sim.fault("status", status=401, path="/v2/positions")
        failed = c.post("/api/admin/jobs/sync-positions")
        assert failed.status_code == 500
        answers.append(failed.text)
        sim.clear_fault()
        answers.append(c.get("/api/admin/jobs/status").text)
        answers.append(c.get("/api/positions").text)
    with httpx.Client(base_url=base, timeout=10) as anonymous:
        answers.append(anonymous.get("/api/admin/jobs/status", params={"access_token": token}).text)
        answers.append(
            anonymous.get("/api/positions", headers={"Authorization": "Bearer rk_x"}).text
        )
        with anonymous.stream(
            "GET", "/api/stream/events", params={"access_token": token, "lastEventId": "0"}
        ) as stream:
            answers.append(next(stream.iter_text()))

    produced = {"answers": "\n".join(answers), **_prefect_records(), **_files(secret_stack["root"])}
    produced["app database"] = _dump(secret_stack["url"])
    assert "position:updated" in produced["app database"]  # the scan sees real content
    assert "not authorized" in produced["answers"]
    for name, text in produced.items():
        for secret in (SECRET, KEY_ID, token):
            assert secret not in text, f"a secret appears in {name}"
    print(
        f"\n[secrets] db={secret_stack['db']} scanned {len(produced)} sources "
        f"({sum(len(t) for t in produced.values()):,} characters: answers, run parameters and "
        f"states, logs, artifacts, events, process logs, every table) for 3 secrets: found 0"
    )


def _prefect_records() -> dict[str, str]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        assert len(runs) >= 2
        logs = client.read_logs()
        artifacts = client.read_artifacts()
        events = client.read_events(filter=EventFilter(), limit=50)
    return {
        "flow run parameters and states": json.dumps(
            [[r.parameters, r.state.message if r.state else None] for r in runs]
        ),
        "flow run logs": "\n".join(log.message for log in logs),
        "artifacts": json.dumps([[a.data, a.description] for a in artifacts], default=str),
        "events": json.dumps([e.model_dump(mode="json") for e in events.events]),
    }


def _files(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_text(errors="replace")
        for path in root.rglob("*.log")
    }


def _dump(url: str) -> str:
    engine = engine_for(url)
    metadata = MetaData()
    metadata.reflect(engine)
    rows: list[str] = []
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            rows += [repr(tuple(row)) for row in connection.execute(select(table))]
    return "\n".join(rows)
