"""Test-only crash points: ``QX_UPDATE_TEST_CRASH_AT=<step>`` makes the process SIGKILL itself there.

This is how the power-cut tests stop the real CLI at an exact step instead of racing a timer. The
names are part of the test contract (see :data:`POINTS`); in production the variable is never set and
:func:`reached` is a dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "QX_UPDATE_TEST_CRASH_AT"

POINTS = (
    "download",      # part of the root payload is on disk (synced), the rest not yet fetched
    "downloaded",    # both artifacts verified in the download cache, slot not touched yet
    "entry-removed",  # the inactive slot's old boot entry is gone, slot not written yet
    "write",         # part of the payload is written into the inactive slot
    "written",       # slot written, synced and read back; bootloader not switched yet
    "sealed",        # a verity release only: tree on the verity partition, partition UUIDs set; pending not recorded
    "switch",        # the UKI is on the ESP, the new boot entry is not
    "entry-tmp",     # the new entry's temp file is written and synced, not yet renamed
    "switched",      # the new entry is in place (the switch happened), state not yet recorded
    # and "chunk-<n>": a delta apply has written the n-th chunk it fetched from the network (qx_update.chunked)
    # and "stream-<label>-<n>" (label slot or uki): the stream path wrote and journaled its n-th batch (qx_update.chunked)
    # qx-install (the installer shares the slot writer, so "write" and "written" apply to it too)
    "install-partitioned",  # wipe: new table, ESP and data made; slot A not written
    "install-retired",      # keep-data: the old boot entries are gone; slot A not written
    "install-configured",   # keep-data: data partition configured; ESP not updated
    "install-entry",        # the ESP holds loader and UKI, not yet the boot entry
    "install-entered",      # the boot entry is written; the install marker still says "installing"
)


def reached(point: str) -> None:
    if os.environ.get(ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def armed(point: str) -> bool:
    """True when this run stops at ``point``: the caller syncs first what the test expects on disk."""
    return os.environ.get(ENV) == point
