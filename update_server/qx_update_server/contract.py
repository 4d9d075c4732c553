"""The ``custom.quantix`` target metadata — docs/update-format.md section 2, in code.

This module is the only place that builds or interprets that dictionary, so the server cannot drift
from the contract the OTA client (``updates/qx_update``) reads.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from qx_common.errors import UserError

CHANNELS: tuple[str, ...] = ("dev", "beta", "stable")
ARTIFACTS: tuple[str, ...] = ("root", "uki")
IMAGE_ID = "quantix-os"


def check_channel(channel: str, field: str = "channel") -> str:
    if channel not in CHANNELS:
        raise UserError(f"{field}: unknown channel {channel!r}", hint=f"use one of: {', '.join(CHANNELS)}")
    return channel


def channels_up_to(channel: str) -> list[str]:
    """Channels are ordered: being on ``stable`` also means being on ``beta`` and ``dev``."""
    check_channel(channel)
    return list(CHANNELS[: CHANNELS.index(channel) + 1])


def merge_channels(current: list[str], channel: str) -> list[str]:
    wanted = set(current) | set(channels_up_to(channel))
    return [c for c in CHANNELS if c in wanted]


def highest_channel(channels: list[str]) -> str | None:
    return max(channels, key=CHANNELS.index) if channels else None


def target_path(version: str, artifact: str) -> str:
    suffix = {"root": "root.erofs.zst", "uki": "efi"}[artifact]
    return f"{version}/{IMAGE_ID}_{version}.{suffix}"


def iso_z(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_fraction(fraction: float) -> int | str:
    """Canonical JSON has no floats: whole values are the integers 0/1, others a decimal string."""
    if not 0 <= fraction <= 1:
        raise UserError(f"rollout fraction {fraction} must be between 0 and 1")
    if fraction in (0, 1):
        return int(fraction)
    return f"{fraction:.6f}".rstrip("0")


def decode_fraction(value: int | str) -> float:
    return float(value)


def quantix_custom(*, version: str, artifact: str, channels: list[str], security_epoch: int, slot_size: int,
                   slot_sha256: str, kernel_cmdline: str, rollout_start: dt.datetime, notes: str,
                   fraction: float = 1.0, paused: bool = False, yanked: bool = False) -> dict[str, Any]:
    if artifact not in ARTIFACTS:
        raise ValueError(f"artifact must be one of {ARTIFACTS}, not {artifact!r}")
    return {
        "version": version,
        "artifact": artifact,
        "channels": list(channels),
        "security_epoch": int(security_epoch),
        "slot_size": int(slot_size),
        "slot_sha256": slot_sha256,
        "kernel_cmdline": kernel_cmdline,
        "rollout": {"fraction": encode_fraction(fraction), "start": iso_z(rollout_start), "paused": bool(paused)},
        "notes": notes,
        "yanked": bool(yanked),
    }
