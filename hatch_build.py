"""Build hook: the service installs only as an application, never as a published wheel.

The repository keeps `flows/`, `api/`, `cli/` and `simulator/` at its top level: the deployment's
entrypoint (`flows/reconcile.py:reconcile_positions`) and the layout operators know. Installed
into site-packages those generic names would collide with any other package so named, so the
build refuses to make a wheel or an sdist for publishing; `uv sync` (an editable install into the
project's own environment) is the only supported install. See docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class RefusePublishing(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    # The hook interface's signature: build_data is unused here.
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:  # noqa: ARG002
        if self.target_name == "wheel" and version == "editable":
            return
        raise RuntimeError(
            "alpaca-recon is installed only as an application (uv sync, editable, in its own "
            "environment): its top-level packages api/cli/flows/simulator would collide in a "
            "shared site-packages. See docs/architecture.md, 'Packaging'."
        )
