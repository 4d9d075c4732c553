"""The console's readiness file, ``/run/quantix/console/<tty>.ready`` — what qx-node's health check reads.

Written once, after the first frame is on the screen (JSON ``{"pid", "version"}``, replaced atomically),
by whichever app runs on the terminal: the status console or the installer. qx-node counts a console
as up while that pid lives.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from qx_common import log
from qx_common.fs import atomic_write

_log = log.get("console")


def write_ready(ready_file: Path | None, version: str) -> None:
    if ready_file is None:
        return
    try:
        atomic_write(ready_file, json.dumps({"pid": os.getpid(), "version": version}))
    except OSError as e:  # the console keeps running; the node's health says the console is not ready
        _log.warning("cannot write %s: %s", ready_file, e)
