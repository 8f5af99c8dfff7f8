"""Where `recon up` leaves its admin token when nobody is watching the terminal.

Printed to a terminal, the token is seen once and gone; printed to a pipe it lands in a
log file, a journal or a CI transcript, readable by whoever reads those. Then it goes to a
file only its owner can read instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from cli.stack_env import write_secret

TOKEN_FILE: Final = "admin-token"  # noqa: S105 (a file name, not a secret)


def write_token_file(data_dir: Path, token: str) -> Path:
    """Write `token` to `data_dir/admin-token`, mode 0600 from its first byte, replacing
    any earlier one."""
    path = data_dir / TOKEN_FILE
    write_secret(path, token)
    return path
