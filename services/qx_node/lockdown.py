"""Lockdown mode as the node API honours it: while the lockdown file exists
(:func:`qx_common.hostpaths.lockdown_file`, written and removed by the physical console with the root
password), the host-configuration routes refuse every change with 423 Locked and a hint; reading them
still works, and VM operations are not host configuration.

Wiring: :func:`refuse_changes_while_locked` is a FastAPI dependency of the routers that change the host
(``qx_node.api.hostctl``). The file is looked up at each request (the console switches lockdown while
qx-node runs; no restart, no cache to go stale). Tests point ``app.state.lockdown_file`` at a file of
their own; unset, it is the host's file.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Request

from qx_common import hostpaths
from qx_node.errors import ApiError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Locked(ApiError):
    """The host is in lockdown mode: a configuration change is refused."""

    status = 423


def lockdown_path(request: Request) -> Path:
    return getattr(request.app.state, "lockdown_file", None) or hostpaths.lockdown_file()


def is_locked(path: Path) -> bool:
    return path.exists()


async def refuse_changes_while_locked(request: Request) -> None:
    if request.method in SAFE_METHODS:
        return
    if is_locked(lockdown_path(request)):
        raise Locked("the host is in lockdown mode: its configuration cannot be changed through the API",
                     hint="turn lockdown mode off at the host's console (F2 > Lockdown Mode), then retry")
