"""When a task is retried: only for what may go away (the broker's transient errors)."""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import State as PrefectState
from prefect.client.schemas.objects import TaskRun
from prefect.tasks import Task

from recon.errors import BrokerTransientError


def retry_transient(_task: Task[Any, Any], _run: TaskRun, state: PrefectState[Any]) -> bool:
    """Retry timeouts, resets, 429 and 5xx; never 401/403 or a bad request."""
    try:
        state.result()
    except BrokerTransientError:
        return True
    except Exception:
        return False
    return False
