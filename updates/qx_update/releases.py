"""Choosing the release to install (docs/update-format.md §3), from verified targets only.

Pure functions over :class:`tuf.api.metadata.TargetFile` objects: no I/O, so every rule is tested
directly. A target's ``custom.quantix`` is read only through :mod:`qx_update.contract`; one outside the
contract (a field missing, out of bounds or of the wrong type) is skipped with the field named.
:func:`choose` returns the newest candidate and, for ``check``/``status``, why the other releases were
passed over.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tuf.api.metadata import TargetFile

from qx_common.version import version_key
from qx_update.contract import ContractError, ReleaseTarget, Rollout, decode_fraction, quantix_of, target_path


@dataclass(frozen=True)
class Release:
    """A candidate: its root target (what is downloaded) and its signed fields (:mod:`qx_update.contract`)."""

    root: TargetFile
    fields: ReleaseTarget

    @property
    def version(self) -> str:
        return self.fields.version

    @property
    def uki_path(self) -> str:
        return target_path(self.version, "uki")

    @property
    def security_epoch(self) -> int:
        return self.fields.security_epoch

    @property
    def slot_size(self) -> int:
        return self.fields.slot_size

    @property
    def slot_sha256(self) -> str:
        return self.fields.slot_sha256

    @property
    def kernel_cmdline(self) -> str:
        return self.fields.kernel_cmdline

    @property
    def notes(self) -> str:
        return self.fields.notes


@dataclass
class Choice:
    release: Release | None
    skipped: list[dict[str, str]] = field(default_factory=list)   # [{version, reason}]


def rollout_position(host_id: str, version: str) -> float:
    """The host's place in [0, 1) for a release's staged rollout (stable per host and release)."""
    return int(hashlib.sha256(f"{host_id}:{version}".encode()).hexdigest()[:8], 16) / 2**32


def parse_fraction(value: object) -> float | None:
    """The rollout fraction in [0, 1] (:func:`qx_update.contract.decode_fraction`), None when malformed."""
    try:
        return decode_fraction(value)
    except ContractError:
        return None


def rollout_reason(rollout: Rollout | Mapping[str, Any] | None, host_id: str, version: str,
                   now: dt.datetime) -> str | None:
    """None when this host is eligible; else why not. A raw mapping is read through the contract."""
    if rollout is None:
        return None
    if not isinstance(rollout, Rollout):
        try:
            rollout = Rollout.from_custom(rollout)
        except ContractError as e:
            return f"rollout metadata is malformed ({e.message})"
    if rollout.paused:
        return "rollout paused"
    start = rollout.start_time()
    if start is not None and now < start:
        return f"rollout starts at {rollout.start}"
    pos = rollout_position(host_id, version)
    if not pos < rollout.fraction:
        return f"not yet in the staged rollout (host at {pos:.3f}, rollout at {rollout.fraction:.3f})"
    return None


def choose(targets: dict[str, TargetFile], *, channel: str, running_version: str, floor: int,
           slot_capacity: int, host_id: str, now: dt.datetime | None = None,
           refused: Mapping[str, str] | None = None) -> Choice:
    """``refused``: version -> why this host refuses it, a sentence (never chosen again here)."""
    refused = refused or {}
    now = now or dt.datetime.now(dt.timezone.utc)
    choice = Choice(None)
    best: Release | None = None
    for path, info in sorted(targets.items()):
        q = quantix_of(info.unrecognized_fields.get("custom"))
        if q is None or q.get("artifact") != "root":
            continue
        try:
            rel = ReleaseTarget.from_custom(q)
        except ContractError as e:  # signed, yet outside the contract: never installed, and said why
            choice.skipped.append({"version": str(q.get("version")), "reason": f"{path}: malformed: {e.message}"})
            continue
        version = rel.version

        def skip(reason: str, version: str = version) -> None:
            choice.skipped.append({"version": version, "reason": reason})

        if rel.yanked:
            skip("yanked")
        elif version in refused:
            skip(f"{refused[version]}; 'qx-update allow {version}' retries it")
        elif channel not in rel.channels:
            skip(f"not on channel {channel}")
        elif version_key(version) <= version_key(running_version):
            skip(f"not newer than the running {running_version}")
        elif rel.security_epoch < floor:
            skip(f"security epoch {rel.security_epoch} is below this host's floor {floor}")
        elif rel.slot_size > slot_capacity:
            skip(f"needs a {rel.slot_size}-byte slot, the inactive slot has {slot_capacity}")
        elif (why := rollout_reason(rel.rollout, host_id, version, now)) is not None:
            skip(why)
        elif best is None or version_key(version) > version_key(best.version):
            best = Release(root=info, fields=rel)
    choice.release = best
    return choice
