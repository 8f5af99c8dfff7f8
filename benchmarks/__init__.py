"""Benchmarks of the reconciler: `uv run python -m benchmarks --help` (or `make bench`).

Figures, each measured side by side in one run (see docs/performance.md):

- `core`: read book + diff + persist (one transaction, journal included) at N positions,
  against a naive ORM script and the driver-only floor, on SQLite and PostgreSQL;
- `flow`: the whole flow under a real Prefect server vs the same steps as plain calls;
- `trigger`: sidecar trigger to the `position:updated` SSE event through the served deployment;
- `fanout`: one journal row to 1,000 concurrent SSE clients of one sidecar process.
"""
