"""What started the current flow run, as the journal's `trigger` field names it."""

from __future__ import annotations

from prefect.runtime import deployment, flow_run

from recon.deployment import TRIGGER_TAGS


def run_trigger() -> str:
    """`schedule` for a deployment run without a starter's tag; `manual` outside a deployment
    (`recon sync`)."""
    tags = set(flow_run.get_tags() or [])
    for tag in TRIGGER_TAGS:
        if tag in tags:
            return tag
    return "schedule" if deployment.get_id() else "manual"
