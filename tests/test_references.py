"""docs/settings.md and docs/cli.md against the code, both ways: a setting or command (or
option) without a row fails, and so does a row without one. The messages name exactly the
rows to add or remove."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer.main

from cli.main import app
from recon.settings import Settings

DOCS = Path(__file__).parent.parent / "docs"


def _rows(doc: str) -> list[list[str]]:
    """The cells of every table row after the header rule."""
    rows = []
    for line in (DOCS / doc).read_text().splitlines():
        if line.startswith("| `"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_settings_reference_has_one_row_per_setting() -> None:
    documented = [re.match(r"`([A-Z_]+)`", row[0]) for row in _rows("settings.md")]
    names = [m.group(1) for m in documented if m]
    fields = {info.alias or name for name, info in Settings.model_fields.items()}
    missing = sorted(fields - set(names))
    extra = sorted(set(names) - fields)
    assert not missing, f"docs/settings.md has no row for: {', '.join(missing)}"
    assert not extra, f"docs/settings.md has rows for settings that do not exist: {extra}"
    assert len(names) == len(set(names)), "docs/settings.md lists a setting twice"


def _commands(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    subcommands = getattr(command, "commands", None)
    if subcommands:
        for name, sub in sorted(subcommands.items()):
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def _parameters(command: Any) -> set[str]:
    names = set()
    for param in command.params:
        if param.name == "help":
            continue
        if param.param_type_name == "argument":
            names.add(f"<{param.name}>")
        else:
            names.update(param.opts + param.secondary_opts)
    return names


def test_cli_reference_has_one_row_per_command_and_every_option() -> None:
    code = {
        name: _parameters(cmd) for name, cmd in _commands(typer.main.get_command(app), ("recon",))
    }
    doc: dict[str, set[str]] = {}
    for row in _rows("cli.md"):
        name = row[0].strip("`")
        cell = row[1]
        found = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", cell)) | set(
            re.findall(r"<[a-z_]+>", cell)
        )
        doc[name] = found
    missing = sorted(set(code) - set(doc))
    extra = sorted(set(doc) - set(code))
    assert not missing, f"docs/cli.md has no row for: {', '.join(missing)}"
    assert not extra, f"docs/cli.md has rows for commands that do not exist: {extra}"
    wrong = {
        name: {
            "undocumented": sorted(code[name] - doc[name]),
            "gone": sorted(doc[name] - code[name]),
        }
        for name in code
        if code[name] != doc[name]
    }
    assert not wrong, f"docs/cli.md options differ from the code: {wrong}"


def test_database_urls_are_secrets_that_never_print() -> None:
    url = "postgresql://recon:hunter2-pw@db.internal:5432/recon"
    settings = Settings(RECON_DATABASE_URL=url, RECON_PREFECT_DATABASE_URL=url)
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert "hunter2-pw" not in shown
    assert settings.resolved_database_url == url
