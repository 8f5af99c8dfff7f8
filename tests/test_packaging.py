"""The service installs only as an application: building a wheel or sdist to publish fails,
the editable install that `uv sync` makes works (hatch_build.py, docs/architecture.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("target", ["wheel", "sdist"])
def test_building_a_package_to_publish_is_refused(target: str, tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", target, "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode != 0
    assert "installed only as an application" in built.stdout + built.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_environment_holds_an_editable_install() -> None:
    direct_url = distribution("alpaca-recon").read_text("direct_url.json")
    assert direct_url is not None
    described = json.loads(direct_url)
    assert described["dir_info"].get("editable") is True
    assert Path(described["url"].removeprefix("file://")).resolve() == ROOT
