"""Overrides and audit, in process (`tests.support.sidecar`) on SQLite and PostgreSQL: every
trigger, preview and override is audited and tagged with the key's name, key creation and
revocation are audited, `GET /api/admin/audit` pages; never a token in any of it.

No runner here (runs stay Scheduled): what a preview answers is `tests/console/`'s.
"""

from __future__ import annotations

import json

import pytest
from prefect.client.orchestration import get_client

from tests.support.sidecar import Sidecar

pytestmark = pytest.mark.usefixtures("no_open_runs")


def _entries(sidecar: Sidecar, **params: str) -> list[dict[str, object]]:
    with sidecar.api("reader") as client:
        answer = client.get("/api/admin/audit", params=params)
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, object]] = answer.json()["entries"]
    return entries


@pytest.mark.parametrize(
    ("params", "action", "tags", "parameters"),
    [
        ({}, "sync", set(), {"dry_run": False, "allow_mass_removal": False}),
        (
            {"dryRun": "true"},
            "preview",
            {"preview"},
            {"dry_run": True, "allow_mass_removal": False},
        ),
        (
            {"allowMassRemoval": "true"},
            "override",
            {"override"},
            {"dry_run": False, "allow_mass_removal": True},
        ),
    ],
)
def test_a_trigger_is_audited_and_tagged_with_the_keys_name(
    sidecar: Sidecar,
    params: dict[str, str],
    action: str,
    tags: set[str],
    parameters: dict[str, bool],
) -> None:
    with sidecar.api() as client:
        answer = client.post("/api/admin/jobs/sync-positions", params={"wait": "false", **params})
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["flowRunId"]
    with get_client(sync_client=True) as prefect:
        run = prefect.read_flow_run(run_id)
    # Besides the deployment's own tags.
    assert {"manual", "api", "key:admin"} | tags <= set(run.tags)
    assert set(run.tags) & {"preview", "override"} == tags
    assert run.parameters == parameters
    (entry,) = [e for e in _entries(sidecar) if e["flowRunId"] == run_id]
    assert entry["actor"] == "admin" and entry["action"] == action
    assert entry["detail"] == {
        "dryRun": parameters["dry_run"],
        "allowMassRemoval": parameters["allow_mass_removal"],
        "via": "api",
    }
    with sidecar.api("reader") as client:
        runs = client.get("/api/admin/jobs/runs").json()["runs"]
    (listed,) = [r for r in runs if r["flowRunId"] == run_id]
    assert listed["who"] == "admin" and listed["trigger"] == "manual"
    assert listed["dryRun"] is parameters["dry_run"]
    assert listed["allowMassRemoval"] is parameters["allow_mass_removal"]
    assert listed["totalChanges"] is None and run_id in listed["flowRunUrl"]


def test_a_key_without_admin_write_can_neither_preview_nor_override(sidecar: Sidecar) -> None:
    before = len(_entries(sidecar, limit="500"))
    for params in ({"dryRun": "true"}, {"allowMassRemoval": "true"}):
        with sidecar.api("reader") as client:
            answer = client.post("/api/admin/jobs/sync-positions", params=params)
        assert answer.status_code == 403
        assert answer.json()["error"] == "forbidden"
    assert len(_entries(sidecar, limit="500")) == before


def test_key_creation_and_revocation_are_audited_by_name_never_token(sidecar: Sidecar) -> None:
    created = _entries(sidecar, action="key:create", limit="500")
    assert {"admin", "reader", "events", "revoked"} <= {e["subject"] for e in created}
    assert all(e["actor"] == "cli" for e in created)
    (revoked,) = _entries(sidecar, action="key:revoke")
    assert revoked["subject"] == "revoked"
    with sidecar.api() as client:
        whole = client.get("/api/admin/audit", params={"limit": "500"}).text
    assert not any(token in whole for token in sidecar.tokens.values())
    assert "rk_" not in json.dumps(created)


def test_the_audit_pages_newest_first(sidecar: Sidecar) -> None:
    everything = _entries(sidecar, limit="500")
    assert len(everything) >= 5
    ids = [e["id"] for e in everything]
    assert ids == sorted(ids, reverse=True)
    seen: list[object] = []
    cursor: str | None = None
    with sidecar.api("reader") as client:
        while True:
            params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
            page = client.get("/api/admin/audit", params=params).json()
            assert page["count"] == len(page["entries"]) <= 2
            seen += [e["id"] for e in page["entries"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert seen == ids
        # Non-ASCII text (a fuzzer's 500 once) and "a²" (a Unicode digit int() refuses).
        for bad in ("nope", "YjE", "x" * 101, "\x80", "YcKy"):
            answer = client.get("/api/admin/audit", params={"cursor": bad})
            assert 400 <= answer.status_code < 500, (bad, answer.text)
            assert answer.json()["error"] == "invalid request"
        assert client.get("/api/admin/audit", params={"limit": "501"}).status_code == 422
        assert client.get("/api/admin/audit", params={"action": "<b>"}).status_code == 422


def test_whoami_names_the_key_and_its_capabilities_never_the_token(sidecar: Sidecar) -> None:
    for name, capabilities in (("admin", ["admin:read", "admin:write", "events:read"]),):
        with sidecar.api(name) as client:
            answer = client.get("/api/admin/whoami")
        assert answer.status_code == 200
        assert answer.json() == {"name": name, "capabilities": capabilities}
        assert sidecar.tokens[name] not in answer.text
    with sidecar.api("reader") as client:
        assert client.get("/api/admin/whoami").json()["capabilities"] == ["admin:read"]
    with sidecar.api("events") as client:
        assert client.get("/api/admin/whoami").status_code == 403
