"""Choosing the release to install (docs/update-format.md §3), from verified targets only.

Pure functions over :class:`tuf.api.metadata.TargetFile` objects: no I/O, so every rule is tested
directly. :func:`choose` returns the newest candidate and, for ``check``/``status``, why the other
releases were passed over.
"""

from __future__ import annotations

from collections.abc import Mapping

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

from tuf.api.metadata import TargetFile

from qx_common.version import is_valid_version, version_key


@dataclass(frozen=True)
class Release:
    version: str
    root: TargetFile
    uki_path: str
    security_epoch: int
    slot_size: int
    slot_sha256: str
    kernel_cmdline: str
    notes: str

    def summary(self) -> dict[str, Any]:
        return {"version": self.version, "security_epoch": self.security_epoch, "slot_size": self.slot_size,
                "download_size": self.root.length, "notes": self.notes}


@dataclass
class Choice:
    release: Release | None
    skipped: list[dict[str, str]] = field(default_factory=list)   # [{version, reason}]


def rollout_position(host_id: str, version: str) -> float:
    """The host's place in [0, 1) for a release's staged rollout (stable per host and release)."""
    return int(hashlib.sha256(f"{host_id}:{version}".encode()).hexdigest()[:8], 16) / 2**32


def parse_fraction(value: object) -> float | None:
    """The rollout fraction in [0, 1]. TUF signs canonical JSON, which has no floats, so a signed
    fraction is an int (0 or 1) or a decimal string ("0.25"); a float is accepted for other envelopes."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        return None
    return float(value)


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def rollout_reason(rollout: object, host_id: str, version: str, now: dt.datetime) -> str | None:
    """None when this host is eligible; else why not."""
    if rollout is None:
        return None
    if not isinstance(rollout, dict):
        return "rollout metadata is malformed"
    if rollout.get("paused"):
        return "rollout paused"
    start = _parse_time(rollout.get("start")) if rollout.get("start") is not None else None
    if rollout.get("start") is not None and start is None:
        return "rollout start is malformed"
    if start is not None and now < start:
        return f"rollout starts at {rollout['start']}"
    fraction = parse_fraction(rollout.get("fraction", 1))
    if fraction is None:
        return "rollout fraction is malformed"
    pos = rollout_position(host_id, version)
    if not pos < fraction:
        return f"not yet in the staged rollout (host at {pos:.3f}, rollout at {fraction:.3f})"
    return None


def choose(targets: dict[str, TargetFile], *, channel: str, running_version: str, floor: int,
           slot_capacity: int, host_id: str, now: dt.datetime | None = None,
           refused: Mapping[str, str] | None = None) -> Choice:
    """``refused``: version -> why this host rolled back from it (never chosen again here)."""
    refused = refused or {}
    now = now or dt.datetime.now(dt.timezone.utc)
    choice = Choice(None)
    best: Release | None = None
    for path, info in sorted(targets.items()):
        q = info.unrecognized_fields.get("custom", {}).get("quantix") if isinstance(
            info.unrecognized_fields.get("custom"), dict) else None
        if not isinstance(q, dict) or q.get("artifact") != "root":
            continue
        version = q.get("version")
        if not isinstance(version, str) or not is_valid_version(version):
            choice.skipped.append({"version": str(version), "reason": f"{path}: malformed version"})
            continue

        def skip(reason: str, version: str = version) -> None:
            choice.skipped.append({"version": version, "reason": reason})

        channels = q.get("channels", [])
        epoch = q.get("security_epoch")
        size = q.get("slot_size")
        if q.get("yanked"):
            skip("yanked")
        elif version in refused:
            skip(f"this host rolled back from it ({refused[version]}); 'qx-update allow {version}' retries it")
        elif not isinstance(channels, list) or channel not in channels:
            skip(f"not on channel {channel}")
        elif version_key(version) <= version_key(running_version):
            skip(f"not newer than the running {running_version}")
        elif not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < floor:
            skip(f"security epoch {epoch} is below this host's floor {floor}")
        elif not isinstance(size, int) or isinstance(size, bool) or size <= 0 or size > slot_capacity:
            skip(f"needs a {size}-byte slot, the inactive slot has {slot_capacity}")
        elif not isinstance(q.get("slot_sha256"), str) or not isinstance(q.get("kernel_cmdline"), str):
            skip("slot_sha256 or kernel_cmdline missing")
        elif (why := rollout_reason(q.get("rollout"), host_id, version, now)) is not None:
            skip(why)
        else:
            rel = Release(version=version, root=info, uki_path=f"{version}/quantix-os_{version}.efi",
                          security_epoch=epoch, slot_size=size, slot_sha256=q["slot_sha256"],
                          kernel_cmdline=q["kernel_cmdline"], notes=str(q.get("notes", "")))
            if best is None or version_key(version) > version_key(best.version):
                best = rel
    choice.release = best
    return choice
