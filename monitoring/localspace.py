"""Evidently's local workspace opened without parsing every snapshot (imported inside runs)."""

from __future__ import annotations

from typing import Any

from evidently.ui.storage.local.base import LocalState
from evidently.ui.workspace import Workspace

LAZY = {"datasets", "dataset_links", "artifacts", "prompts", "configs"}
"""The APIs `Workspace.__init__` builds that servewatch never uses (built on first use)."""


class FileWorkspace(Workspace):  # type: ignore[misc]  # evidently is untyped here
    """`Workspace` on a folder that reads and writes its project, dashboard and snapshot files
    one at a time through `state`; `Workspace.__init__` (which also loads the datasets API, and
    with it every snapshot of every project) runs only if one of `LAZY` is asked for."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.state = LocalState(path)

    def __getattr__(self, name: str) -> Any:
        if name in LAZY:
            Workspace.__init__(self, self.path)
            return getattr(self, name)
        raise AttributeError(name)
