"""Health of this host's components, as reported by ``GET /health`` and used by the boot gate.

Each check is independent, fast (bounded by a timeout) and returns a :class:`ComponentHealth`.
The host is healthy only when every component is. Checks never raise: a failure is a result.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ComponentHealth:
    name: str
    ok: bool
    detail: str


def check_libvirt_connection(uri: str, status: tuple[bool, str]) -> ComponentHealth:
    """The daemon's own (reconnecting) libvirt connection (``Libvirt.status()``): no RPC, no new
    connection per health call, and the detail is the latest attempt's, with its age."""
    ok, detail = status
    return ComponentHealth("libvirt", ok, f"{uri}: {detail}")


def timed_out(name: str, seconds: float) -> ComponentHealth:
    return ComponentHealth(name, False, f"the check did not finish within {seconds:g} s")


def check_data(state_dir: Path) -> ComponentHealth:
    """The data partition (state dir) must exist and accept a synced write."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=state_dir, prefix=".health-", delete=True) as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return ComponentHealth("data", False, f"{state_dir}: {e.strerror or e}")
    return ComponentHealth("data", True, f"{state_dir}: writable")


def check_console(ready_dir: Path | None, unchecked_reason: str = "--no-console-check") -> ComponentHealth:
    """The console writes ``<ready_dir>/<tty>.ready`` (JSON) after its first frame."""
    if ready_dir is None:
        return ComponentHealth("console", True, f"not checked ({unchecked_reason})")
    ttys = []
    for p in sorted(ready_dir.glob("*.ready")):
        try:
            info = json.loads(p.read_text())
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if Path(f"/proc/{pid}").exists():
            ttys.append(p.stem)
    if not ttys:
        return ComponentHealth("console", False, f"no running console has reported ready in {ready_dir}")
    return ComponentHealth("console", True, "running on " + ", ".join(ttys))


def overall(components: list[ComponentHealth]) -> dict[str, object]:
    return {
        "status": "ok" if all(c.ok for c in components) else "degraded",
        "components": {c.name: {k: v for k, v in asdict(c).items() if k != "name"} for c in components},
    }
