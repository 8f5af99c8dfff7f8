"""Zombie detection: a run whose process died with its runner is marked Crashed, freeing its slot.

When the runner is alive it reports a dead flow process itself. When both die (SIGKILL,
OOM, host loss) nobody does, the run stays Running, and with CANCEL_NEW every later run is
cancelled until the concurrency lease expires (~5 min). This proactive automation (from
Prefect's "detect zombie flows" guide) fires when a run that sent heartbeats stops sending
them without reaching a final state.
"""

from __future__ import annotations

from datetime import timedelta

from prefect.automations import Automation
from prefect.client.schemas.objects import State, StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture

NAME = "recon: crash zombie flow runs"
HEARTBEAT = "prefect.flow-run.heartbeat"
# The final states' event names (prefect.flow-run.Completed, ...), by Prefect's own
# definition of final; a state type's default name is its value in title case.
FINAL = tuple(t.value.title() for t in StateType if State(type=t).is_final())


def zombie_automation(heartbeat_seconds: int) -> Automation:
    # One and a half intervals of silence: a late beat (busy machine) is tolerated, and a
    # dead run is crashed 15-45 s after it died, well within the five-minute schedule.
    silence = heartbeat_seconds * 3 // 2
    return Automation(
        name=NAME,
        description="Marks a flow run Crashed when its heartbeats stop before a final state.",
        trigger=EventTrigger(
            after={HEARTBEAT},
            expect={HEARTBEAT, *(f"prefect.flow-run.{s}" for s in FINAL)},
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=silence),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {silence} s: the flow process is gone.",
            )
        ],
    )


async def ensure_zombie_automation(heartbeat_seconds: int) -> Automation:
    """Create the automation, or bring an existing one up to date (idempotent)."""
    wanted = zombie_automation(heartbeat_seconds)
    try:
        existing = await Automation.aread(name=NAME)
    except ValueError:
        return await wanted.acreate()
    wanted.id = existing.id
    await wanted.aupdate()
    return wanted
