"""The test harness, shared by the tests and the benchmarks: real processes, real servers.

- `wait`: the one `wait_until` (poll a condition; never a fixed sleep).
- `env`: the one environment scrub, and the environments of the stack's processes.
- `process`: the one child-process wrapper (`Process`, `run_module`) and /proc probes.
- `prefect`: a real `prefect server start`.
- `databases`: a migrated app database, SQLite file or PostgreSQL schema.
- `sidecar`: the sidecar app in this process (`Sidecar`), for the route contract tests.
- `stack`: the typed `Stack` (Prefect server, `recon serve`, `recon api`, the simulator).
- `books`: the book, journal and run log as the scenarios compare them.
- `asgi`: an ASGI app under a real uvicorn in a thread, and the journal rows and keys its
  tests need.

Nothing here imports Prefect at module level except `prefect` and `stack`: the benchmarks
set Prefect's home before they import it.
"""
