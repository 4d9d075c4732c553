"""The release contract: what a Quantix release carries in signed TUF metadata (docs/update-format.md §2).

This module is the one definition of the ``custom.quantix`` object every Quantix target carries, the
channels, the artifact kinds and their file names, and the bounds on every signed field. The update
client owns it (it is the side that must never misread a release); the update server imports it to
build what it signs (``qx_update_server.contract`` keeps only server policy: retention and the size
budget of the targets metadata). ``tests/updates/test_contract.py`` checks the document against it.

Invariants:

* :meth:`ReleaseTarget.from_custom` ∘ :meth:`ReleaseTarget.to_custom` is the identity, and whatever
  ``to_custom`` writes, ``from_custom`` reads back (the server's publish → the client's choice).
* A :class:`ReleaseTarget` is valid by construction (``__post_init__`` checks every field and bound), so
  nothing out of bounds is ever signed, and a signed target out of bounds is refused on the host
  (a :class:`ContractError` naming the field; the client skips that release and says why).
* Canonical JSON has no floats: ``rollout.fraction`` is written as the integer 0/1 or a decimal string;
  readers accept an int, a decimal string or a float (other envelopes than TUF's).
* Channel names are checked when written (:meth:`ReleaseTarget.to_custom`), not when read: a host must
  keep reading releases of a newer server that added a channel it does not know (it just is not on it).

Pure: no I/O and no TUF import, so the server, the client and the tests share it without cost.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qx_common.errors import UserError
from qx_common.version import IMAGE_ID, is_valid_version

__all__ = [
    "ARTIFACTS", "ARTIFACT_SUFFIXES", "CHANNELS", "IMAGE_ID", "INDEX_OF", "INDEX_SUFFIXES", "MAX_CHUNKS",
    "MAX_CHUNK_BYTES", "MAX_CMDLINE_BYTES", "MAX_INDEX_BYTES", "MAX_NOTES_BYTES", "MAX_SECURITY_EPOCH",
    "MAX_SLOT_SIZE", "MAX_STORED_CHUNK_BYTES", "MAX_VERSION_LEN", "ContractError", "ReleaseTarget", "Rollout",
    "artifact_name", "channels_up_to", "check_channel", "check_int", "check_kernel_cmdline", "check_notes",
    "check_version", "decode_fraction", "encode_fraction", "iso_z", "merge_channels", "quantix_of", "target_path",
]

# Ordered: a release on ``stable`` is also on ``beta`` and ``dev`` (promotion only ever adds channels).
CHANNELS: tuple[str, ...] = ("dev", "beta", "stable")
# The artifact kinds of a release and the suffix of each one's file name (``quantix-os_<v>.<suffix>``).
ARTIFACT_SUFFIXES: Mapping[str, str] = {"root": "root.erofs.zst", "uki": "efi"}
ARTIFACTS: tuple[str, ...] = tuple(ARTIFACT_SUFFIXES)
# Each artifact's chunk index (docs/update-format.md §5): a signed target of its own beside the artifact,
# with the same custom.quantix fields and these artifact kinds. Not in ARTIFACTS: a build uploads no
# index (the server makes it at publish), and hosts before delta updates choose only ``artifact: root``.
INDEX_SUFFIXES: Mapping[str, str] = {"root-index": "root.chunks.json", "uki-index": "efi.chunks.json"}
INDEX_OF: Mapping[str, str] = {"root": "root-index", "uki": "uki-index"}
_ALL_SUFFIXES: Mapping[str, str] = {**ARTIFACT_SUFFIXES, **INDEX_SUFFIXES}

# ---- bounds on every signed field -----------------------------------------------------------------
# Every host downloads the whole targets metadata on every check (the server's size budget, in
# qx_update_server.contract, is computed from these), and a value reaches the kernel command line,
# the console and logs: nothing unbounded or with control characters is signed or accepted.
MAX_VERSION_LEN = 64
MAX_NOTES_BYTES = 4096
MAX_CMDLINE_BYTES = 2048  # the kernel's COMMAND_LINE_SIZE on x86
MAX_SECURITY_EPOCH = 1_000_000
MAX_SLOT_SIZE = 1 << 40  # 1 TiB: far above any root slot, small enough to stay an exact integer anywhere
# Chunk indexes (§5): a host holds one index in memory and one chunk at a time per download worker.
MAX_INDEX_BYTES = 32 << 20          # the index file (a 2 GiB root at the 80 KiB average is ~4 MB)
MAX_CHUNKS = 262_144                # chunks per index (16 GiB at the 64 KiB average)
MAX_CHUNK_BYTES = 1 << 20           # one chunk, uncompressed (FastCDC's max_size is 256 KiB)
MAX_STORED_CHUNK_BYTES = MAX_CHUNK_BYTES + (64 << 10)  # one stored (zstd) chunk: incompressible + framing
_CMDLINE_RE = re.compile(r"[\x20-\x7e]*")  # printable ASCII: no newline or control byte reaches the kernel
_NOTES_BAD = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # control characters other than tab and newline
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_FRACTION_RE = re.compile(r"(0|1)(\.\d{1,6})?")
_HINT = "the manifest must be the one qx-build wrote (docs/update-format.md section 1)"


class ContractError(UserError):
    """A release field outside the contract; the message names the field (``rollout.fraction: …``)."""


def check_version(version: object, field: str = "version") -> str:
    """``MAJOR.MINOR.PATCH[-PRE]``, the whole string (no trailing newline), at most MAX_VERSION_LEN."""
    if not isinstance(version, str) or len(version) > MAX_VERSION_LEN or not is_valid_version(version):
        raise ContractError(f"{field}: {version!r} is not MAJOR.MINOR.PATCH[-PRE] of at most {MAX_VERSION_LEN} "
                            "characters", hint="e.g. 1.2.0 or 1.3.0-rc1, with nothing before or after it")
    return version


def check_notes(notes: object, field: str = "notes") -> str:
    if not isinstance(notes, str):
        raise ContractError(f"{field}: must be text")
    if len(notes.encode()) > MAX_NOTES_BYTES:
        raise ContractError(f"{field}: {len(notes.encode())} bytes is over the limit of {MAX_NOTES_BYTES}",
                            hint="every host downloads the notes of every release: keep them short and link to "
                                 "the full release notes")
    if _NOTES_BAD.search(notes):
        raise ContractError(f"{field}: contains a control character",
                            hint="use plain text (tabs and newlines are fine)")
    return notes


def check_kernel_cmdline(cmdline: object, field: str = "kernel_cmdline") -> str:
    if not isinstance(cmdline, str) or not _CMDLINE_RE.fullmatch(cmdline):
        raise ContractError(f"{field}: must be printable ASCII on one line", hint=_HINT)
    if len(cmdline) > MAX_CMDLINE_BYTES:
        raise ContractError(f"{field}: {len(cmdline)} bytes is over the kernel's limit of {MAX_CMDLINE_BYTES}")
    return cmdline


def check_int(value: object, field: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ContractError(f"{field}: {value!r} must be an integer from {lo} to {hi}", hint=_HINT)
    return value


def check_sha256(value: object, field: str) -> str:
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise ContractError(f"{field}: {value!r} is not a sha256", hint="64 lowercase hex digits")
    return value


def check_channel(channel: str, field: str = "channel") -> str:
    if channel not in CHANNELS:
        raise ContractError(f"{field}: unknown channel {channel!r}", hint=f"use one of: {', '.join(CHANNELS)}")
    return channel


def channels_up_to(channel: str) -> list[str]:
    """Channels are ordered: being on ``stable`` also means being on ``beta`` and ``dev``."""
    check_channel(channel)
    return list(CHANNELS[: CHANNELS.index(channel) + 1])


def merge_channels(current: list[str], channel: str) -> list[str]:
    wanted = set(current) | set(channels_up_to(channel))
    return [c for c in CHANNELS if c in wanted]


def artifact_name(version: str, artifact: str) -> str:
    """The one file name an artifact of ``version`` may have (the basename of its target path)."""
    return f"{IMAGE_ID}_{version}.{_ALL_SUFFIXES[artifact]}"


def target_path(version: str, artifact: str) -> str:
    return f"{version}/{artifact_name(version, artifact)}"


def iso_z(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_fraction(fraction: float) -> int | str:
    """Canonical JSON has no floats: whole values are the integers 0/1, others a decimal string."""
    if not 0 <= fraction <= 1:
        raise ContractError(f"rollout fraction {fraction} must be between 0 and 1")
    if fraction in (0, 1):
        return int(fraction)
    return f"{fraction:.6f}".rstrip("0")


def decode_fraction(value: object, field: str = "rollout.fraction") -> float:
    """The fraction in [0, 1] from an int 0/1, a decimal string ("0.25") or a float."""
    if isinstance(value, str) and _FRACTION_RE.fullmatch(value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ContractError(f"{field}: {value!r} is not a fraction from 0 to 1",
                            hint="an integer 0 or 1, or a decimal string such as \"0.25\"")
    return float(value)


def _check_time(value: object, field: str) -> str:
    if not isinstance(value, str) or not _TIME_RE.fullmatch(value):
        raise ContractError(f"{field}: {value!r} is not a UTC time YYYY-MM-DDTHH:MM:SSZ")
    try:
        dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError as e:
        raise ContractError(f"{field}: {value!r} is not a valid date and time") from e
    return value


def _check_bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise ContractError(f"{field}: {value!r} must be true or false")
    return value


@dataclass(frozen=True)
class Rollout:
    """A staged rollout: hosts whose position (``qx_update.releases.rollout_position``) is below
    ``fraction`` may take the release from ``start`` on, unless it is ``paused``."""

    fraction: float = 1.0
    start: str | None = None          # YYYY-MM-DDTHH:MM:SSZ; None: from the start (never written so)
    paused: bool = False

    def __post_init__(self) -> None:
        decode_fraction(self.fraction)
        if self.start is not None:
            _check_time(self.start, "rollout.start")
        _check_bool(self.paused, "rollout.paused")

    def start_time(self) -> dt.datetime | None:
        if self.start is None:
            return None
        return dt.datetime.strptime(self.start, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)

    def to_custom(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fraction": encode_fraction(self.fraction), "paused": self.paused}
        if self.start is not None:
            out["start"] = self.start
        return out

    @classmethod
    def from_custom(cls, raw: object, field: str = "rollout") -> Rollout:
        if not isinstance(raw, Mapping):
            raise ContractError(f"{field}: must be an object {{fraction, start, paused}}")
        return cls(fraction=decode_fraction(raw.get("fraction", 1), f"{field}.fraction"),
                   start=_check_time(raw["start"], f"{field}.start") if raw.get("start") is not None else None,
                   paused=_check_bool(raw.get("paused", False), f"{field}.paused"))


@dataclass(frozen=True)
class ReleaseTarget:
    """One target's ``custom.quantix``: the release fields (the same on its root and its UKI target)
    plus which ``artifact`` of the release this target is."""

    version: str
    artifact: str                     # one of ARTIFACTS, or an index kind of INDEX_SUFFIXES
    channels: tuple[str, ...]
    security_epoch: int
    slot_size: int                    # bytes the root slot needs (the uncompressed erofs)
    slot_sha256: str                  # of the uncompressed erofs bytes written to the slot
    kernel_cmdline: str
    rollout: Rollout = field(default_factory=Rollout)
    notes: str = ""
    yanked: bool = False

    def __post_init__(self) -> None:
        check_version(self.version)
        if self.artifact not in _ALL_SUFFIXES:
            raise ContractError(f"artifact: {self.artifact!r} is not one of {', '.join(_ALL_SUFFIXES)}")
        if not isinstance(self.channels, tuple) or not all(isinstance(c, str) for c in self.channels):
            raise ContractError(f"channels: {self.channels!r} must be a list of channel names")
        check_int(self.security_epoch, "security_epoch", 0, MAX_SECURITY_EPOCH)
        check_int(self.slot_size, "slot_size", 1, MAX_SLOT_SIZE)
        check_sha256(self.slot_sha256, "slot_sha256")
        check_kernel_cmdline(self.kernel_cmdline)
        if not isinstance(self.rollout, Rollout):
            raise ContractError("rollout: must be a Rollout")
        check_notes(self.notes)
        _check_bool(self.yanked, "yanked")

    @property
    def path(self) -> str:
        """This target's path in the repository (``<v>/quantix-os_<v>.<suffix>``)."""
        return target_path(self.version, self.artifact)

    def to_custom(self) -> dict[str, Any]:
        """The ``custom.quantix`` object to sign (canonical-JSON safe: no floats)."""
        for c in self.channels:
            check_channel(c, "channels")
        if self.rollout.start is None:
            raise ContractError("rollout.start: a signed release needs the time its rollout starts")
        return {
            "version": self.version,
            "artifact": self.artifact,
            "channels": list(self.channels),
            "security_epoch": self.security_epoch,
            "slot_size": self.slot_size,
            "slot_sha256": self.slot_sha256,
            "kernel_cmdline": self.kernel_cmdline,
            "rollout": self.rollout.to_custom(),
            "notes": self.notes,
            "yanked": self.yanked,
        }

    @classmethod
    def from_custom(cls, raw: object) -> ReleaseTarget:
        """Read a signed ``custom.quantix``; a :class:`ContractError` names the first bad field.

        ``rollout``, ``notes`` and ``yanked`` may be absent (no staged rollout, no notes, not yanked)."""
        if not isinstance(raw, Mapping):
            raise ContractError("custom.quantix: must be an object")
        for key in ("version", "artifact", "channels", "security_epoch", "slot_size", "slot_sha256",
                    "kernel_cmdline"):
            if key not in raw:
                raise ContractError(f"{key}: missing")
        channels = raw["channels"]
        if not isinstance(channels, list):
            raise ContractError(f"channels: {channels!r} must be a list of channel names")
        rollout = raw.get("rollout")
        return cls(version=check_version(raw["version"]), artifact=raw["artifact"], channels=tuple(channels),
                   security_epoch=raw["security_epoch"], slot_size=raw["slot_size"],
                   slot_sha256=raw["slot_sha256"], kernel_cmdline=raw["kernel_cmdline"],
                   rollout=Rollout() if rollout is None else Rollout.from_custom(rollout),
                   notes=raw.get("notes", ""), yanked=raw.get("yanked", False))


def quantix_of(custom: object) -> Mapping[str, Any] | None:
    """The raw ``custom.quantix`` object of a target's ``custom`` field, or None when it has none
    (a target that is not a Quantix release artifact)."""
    if not isinstance(custom, Mapping):
        return None
    q = custom.get("quantix")
    return q if isinstance(q, Mapping) else None
