"""Server policy on top of the release contract: the size budget of the signed targets metadata.

The release contract itself — channels, artifact kinds and names, the ``custom.quantix`` fields and their
bounds — is :mod:`qx_update.contract`, owned by the OTA client and imported here (as python-tuf's
``api`` is shared by its client and repository code), so the server cannot drift from what hosts read.
This module adds only what is the server's to decide: how many releases stay signed, how large the
targets metadata may grow, and the size of the files uploaded beside a release. Everything the server
modules need from the contract is importable from here too (``contract.CHANNELS`` …).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from qx_update.contract import (ARTIFACTS, CHANNELS, IMAGE_ID, INDEX_OF, MAX_CMDLINE_BYTES, MAX_NOTES_BYTES,
                                MAX_SECURITY_EPOCH, MAX_SLOT_SIZE, MAX_VERSION_LEN, ReleaseTarget, Rollout,
                                artifact_name, channels_up_to, check_channel, check_int, check_kernel_cmdline,
                                check_notes, check_version, decode_fraction, encode_fraction, iso_z,
                                merge_channels, target_path)

__all__ = [
    "ARTIFACTS", "CHANNELS", "CLIENT_TARGETS_MAX_LENGTH", "IMAGE_ID", "INDEX_OF", "KEEP_SUPERSEDED", "MAX_CMDLINE_BYTES",
    "MAX_MANIFEST_BYTES", "MAX_NOTES_BYTES", "MAX_SECURITY_EPOCH", "MAX_SIGNED_RELEASES", "MAX_SLOT_SIZE",
    "MAX_SUMS_BYTES", "MAX_VERSION_LEN", "TARGETS_MAX_BYTES", "artifact_name", "channels_up_to",
    "check_channel", "check_int", "check_kernel_cmdline", "check_notes", "check_version", "decode_fraction",
    "encode_fraction", "iso_z", "merge_channels", "quantix_custom", "target_path",
]

# ---- the size budget of what is signed -----------------------------------------------------------
# Each release is signed in its own delegated role (docs/update-format.md §2.1); every host downloads the
# top-level targets role (one delegation per release, plus the newest release of each channel) when it
# changes, and python-tuf's ngclient refuses a role over UpdaterConfig.targets_max_length (5,000,000 bytes
# by default, what qx-update uses). A repository that outgrows it stops updates for every host for good,
# so the server bounds (1) every field of a target, at publish (the contract's bounds), and (2) the number
# of releases kept signed, by the retention rule of ``repository.prune``. Worst case, all fields at their
# maximum and every JSON byte escaped: a release role ≈ 25 KB, the top-level role ≈ 110 KB with
# MAX_SIGNED_RELEASES releases — far below TARGETS_MAX_BYTES < the client's limit
# (tests/update_server/test_bounds.py signs such releases and measures what a host downloads).
CLIENT_TARGETS_MAX_LENGTH = 5_000_000  # tuf.ngclient.UpdaterConfig().targets_max_length
TARGETS_MAX_BYTES = 2_000_000  # what the server signs at most; checked on the serialized bytes
MAX_SIGNED_RELEASES = 64  # releases in the signed set; publish is refused beyond (yank or remove first)
KEEP_SUPERSEDED = 3  # superseded releases kept signed (newest first), so list shows recent history
MAX_MANIFEST_BYTES = 4 << 20  # the build manifest (package list): uploaded, stored, never signed
MAX_SUMS_BYTES = 64 << 10  # SHA256SUMS: a handful of lines


def quantix_custom(*, version: str, artifact: str, channels: list[str], security_epoch: int, slot_size: int,
                   slot_sha256: str, kernel_cmdline: str, rollout_start: dt.datetime, notes: str,
                   fraction: float = 1.0, paused: bool = False, yanked: bool = False) -> dict[str, Any]:
    """The ``custom.quantix`` of a new target: the contract's model, validated, as signed JSON."""
    return ReleaseTarget(version=version, artifact=artifact, channels=tuple(channels),
                         security_epoch=security_epoch, slot_size=slot_size, slot_sha256=slot_sha256,
                         kernel_cmdline=kernel_cmdline, notes=notes, yanked=yanked,
                         rollout=Rollout(fraction=fraction, start=iso_z(rollout_start), paused=paused)).to_custom()
