"""Names and schedule of the deployment: what `flows/` deploys and what `api/` reads back.

Only constants (and one test on a run's parameters), no Prefect import: both sides need
them and neither imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FLOW_NAME = "reconcile-positions"
DEPLOYMENT_NAME = "every-5-minutes"
FULL_NAME = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"
# The Broker API mode's shards (RECON_SHARDS > 1): child runs of the same flow, one per
# slice of the accounts, picked up by whichever runner or worker serves this deployment.
SHARD_DEPLOYMENT_NAME = "shard"
SHARD_FULL_NAME = f"{FLOW_NAME}/{SHARD_DEPLOYMENT_NAME}"
# The process work pool of prefect.yaml, and of `recon up --workers K`'s shard deployment.
WORK_POOL = "recon-process"

CRON = "*/5 * * * *"
TIMEZONE = "America/New_York"

# Prefect 3.9 computes New York cron in wall-clock time and skips the repeated 01:00-01:59
# hour when clocks fall back (first Sunday of November, 06:00-06:55 UTC): a 65-minute gap.
# This second schedule fills exactly that hour. `day_or=False` makes day-of-month 1-7 AND
# Sunday both required (cron would otherwise OR them). Spring-forward needs nothing: the
# skipped 02:xx hour does not exist, and the runs on either side are five minutes apart.
FALL_BACK_CRON = "*/5 6 1-7 11 0"
FALL_BACK_TIMEZONE = "UTC"

# What the status endpoint shows as "the" schedule (the fill is an implementation detail).
SCHEDULE_LABEL = f"{CRON} ({TIMEZONE})"

# Tags the starters put on their runs: the listener's own fill runs, its full runs after a
# (re)connect ("startup" for its first) or when a fill batch could not settle ("fallback"),
# `recon serve`'s startup run and the sidecar's trigger ("manual"). A deployment run with
# none of them is the schedule's.
TRIGGER_TAGS = ("fill", "fallback", "reconnect", "startup", "manual")
# The sidecar's trigger also tags who asked (`key:<name>`, a key's name, never its token)
# and what: a dry run ("preview"), a removal over the cap allowed ("override").
KEY_TAG_PREFIX = "key:"
PREVIEW_TAG = "preview"
OVERRIDE_TAG = "override"


def is_preview(parameters: Mapping[str, Any] | None) -> bool:
    """A run of the flow with `dry_run`: it writes nothing, its failure included."""
    return bool((parameters or {}).get("dry_run"))
