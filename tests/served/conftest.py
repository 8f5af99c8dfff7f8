"""One served stack (SQLite) for the end-to-end tests of the deployment and the sidecar.

Shared by the package's two modules, in their order: `test_api.py` first (its overlap check
reads every run on the server, and `test_deployment.py` makes runs the concurrency limit
cancels), then `test_deployment.py` (which kills and restarts the runner). The scheduler
is off (`served_stack`): a cron run falling due mid-test would take the slot, cancelling
the run under test or turning a trigger into a 409.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.sidecar import KEYS
from tests.support.stack import Stack, sqlite_stack


@pytest.fixture(scope="package")
def stack(simulator_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`recon serve` and `recon api` against a live server, the simulator and a SQLite app
    database; this process's Prefect client points at that server meanwhile."""
    root = tmp_path_factory.mktemp("served")
    with sqlite_stack(root, simulator_server, keys=KEYS, trigger_wait=45) as stack:
        yield stack
