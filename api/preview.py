"""A dry run's answer: the `PreviewReport` the run stored as a Prefect artifact.

A preview writes nothing to the app database, so its result travels through Prefect (the
source of every run's state): `flows.preview` stores it, this reads it back.
"""

from __future__ import annotations

from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
)

from recon.schemas.result import PREVIEW_ARTIFACT_TYPE, PreviewReport


async def read_preview(prefect: PrefectClient, flow_run_id: UUID | str) -> PreviewReport | None:
    artifacts = await prefect.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(flow_run_id))]),
            type=ArtifactFilterType(any_=[PREVIEW_ARTIFACT_TYPE]),
        ),
        limit=1,
    )
    if not artifacts or not isinstance(artifacts[0].data, dict):
        return None
    return PreviewReport.model_validate(artifacts[0].data)
