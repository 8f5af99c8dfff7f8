"""`python -m tests.support.broker_child DIR NAME`: one process running the flow, as one
worker of many would: it says it is ready (`DIR/NAME.ready`), waits for `DIR/go`, runs
`reconcile_positions` once and writes its final state's name and result to
`DIR/NAME.json`. The test starts the processes together by creating `go` once every one
is ready, so their runs overlap whatever their import times."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

DEADLINE_SECONDS = 120


def main(directory: Path, name: str) -> int:
    from flows.reconcile import reconcile_positions

    (directory / f"{name}.ready").touch()
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not (directory / "go").exists():  # a barrier, polled; never a fixed wait
        if time.monotonic() > deadline:
            return 2
        time.sleep(0.02)
    state = reconcile_positions(return_state=True)
    result = state.result(raise_on_failure=False) if state.is_completed() else None
    body = {"state": state.type.value, "message": state.message, "result": result}
    (directory / f"{name}.json").write_text(json.dumps(body))
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
