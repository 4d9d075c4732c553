"""The ``custom.quantix`` target metadata — docs/update-format.md section 2, in code.

This module is the only place that builds or interprets that dictionary, so the server cannot drift
from the contract the OTA client (``updates/qx_update``) reads.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from qx_common.errors import UserError
from qx_common.version import is_valid_version

CHANNELS: tuple[str, ...] = ("dev", "beta", "stable")
ARTIFACTS: tuple[str, ...] = ("root", "uki")
IMAGE_ID = "quantix-os"

# ---- bounds on what is signed ------------------------------------------------------------------
# Every host downloads the whole top-level targets metadata on every check, and python-tuf's ngclient
# refuses a targets.json over UpdaterConfig.targets_max_length (5,000,000 bytes by default, what
# qx-update uses). A repository that outgrows it stops updates for every host for good, so the server
# bounds (1) every field of a target, at publish, and (2) the number of releases kept signed, by the
# retention rule of :func:`retained`. Worst case, all fields at their maximum and every JSON byte
# escaped: MAX_SIGNED_RELEASES * 2 targets * ~10.8 KB ≈ 1.4 MB < TARGETS_MAX_BYTES < the client's limit
# (tests/update_server/test_bounds.py signs that worst case and refreshes it with ngclient).
CLIENT_TARGETS_MAX_LENGTH = 5_000_000  # tuf.ngclient.UpdaterConfig().targets_max_length
TARGETS_MAX_BYTES = 2_000_000  # what the server signs at most; checked on the serialized bytes
MAX_SIGNED_RELEASES = 64  # releases in the signed set; publish is refused beyond (yank or remove first)
KEEP_SUPERSEDED = 3  # superseded releases kept signed (newest first), so list shows recent history
MAX_VERSION_LEN = 64
MAX_NOTES_BYTES = 4096
MAX_CMDLINE_BYTES = 2048  # the kernel's COMMAND_LINE_SIZE on x86
MAX_SECURITY_EPOCH = 1_000_000
MAX_SLOT_SIZE = 1 << 40  # 1 TiB: far above any root slot, small enough to stay an exact integer anywhere
MAX_MANIFEST_BYTES = 4 << 20  # the build manifest (package list): uploaded, stored, never signed
MAX_SUMS_BYTES = 64 << 10  # SHA256SUMS: a handful of lines
_CMDLINE_RE = re.compile(r"[\x20-\x7e]*")  # printable ASCII: no newline or control byte reaches the kernel
_NOTES_BAD = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # control characters other than tab and newline


def check_version(version: object, field: str = "version") -> str:
    """``MAJOR.MINOR.PATCH[-PRE]``, the whole string (no trailing newline), at most MAX_VERSION_LEN."""
    if not isinstance(version, str) or len(version) > MAX_VERSION_LEN or not is_valid_version(version):
        raise UserError(f"{field}: {version!r} is not MAJOR.MINOR.PATCH[-PRE] of at most {MAX_VERSION_LEN} "
                        "characters", hint="e.g. 1.2.0 or 1.3.0-rc1, with nothing before or after it")
    return version


def check_notes(notes: object, field: str = "notes") -> str:
    if not isinstance(notes, str):
        raise UserError(f"{field}: must be text")
    if len(notes.encode()) > MAX_NOTES_BYTES:
        raise UserError(f"{field}: {len(notes.encode())} bytes is over the limit of {MAX_NOTES_BYTES}",
                        hint="every host downloads the notes of every release: keep them short and link to "
                             "the full release notes")
    if _NOTES_BAD.search(notes):
        raise UserError(f"{field}: contains a control character", hint="use plain text (tabs and newlines are fine)")
    return notes


def check_kernel_cmdline(cmdline: object, field: str = "kernel_cmdline") -> str:
    if not isinstance(cmdline, str) or not _CMDLINE_RE.fullmatch(cmdline):
        raise UserError(f"{field}: must be printable ASCII on one line",
                        hint="the manifest must be the one qx-build wrote (docs/update-format.md section 1)")
    if len(cmdline) > MAX_CMDLINE_BYTES:
        raise UserError(f"{field}: {len(cmdline)} bytes is over the kernel's limit of {MAX_CMDLINE_BYTES}")
    return cmdline


def check_int(value: object, field: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise UserError(f"{field}: {value!r} must be an integer from {lo} to {hi}",
                        hint="the manifest must be the one qx-build wrote (docs/update-format.md section 1)")
    return value


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


def artifact_name(version: str, artifact: str) -> str:
    """The one file name an artifact of ``version`` may have (the basename of its target path)."""
    suffix = {"root": "root.erofs.zst", "uki": "efi"}[artifact]
    return f"{IMAGE_ID}_{version}.{suffix}"


def target_path(version: str, artifact: str) -> str:
    return f"{version}/{artifact_name(version, artifact)}"


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
    # The same bounds release.load applies: nothing unbounded is ever signed, whoever calls this.
    check_version(version)
    check_notes(notes)
    check_kernel_cmdline(kernel_cmdline)
    check_int(security_epoch, "security_epoch", 0, MAX_SECURITY_EPOCH)
    check_int(slot_size, "slot_size", 1, MAX_SLOT_SIZE)
    if not re.fullmatch(r"[0-9a-f]{64}", slot_sha256):
        raise UserError(f"slot_sha256: {slot_sha256!r} is not a sha256")
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
