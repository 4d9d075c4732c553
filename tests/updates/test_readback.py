"""slots.ReadBack: the delta/stream apply's proof reads the written image back from the disk, behind the
writer, never from the page cache that holds what was just written.

A loop device has a page cache of its own, apart from its backing file's: a byte changed in the backing
file after the write is what a disk that lost or misdirected a write returns. A read-back served from
the loop device's cache would not see it; one from the disk does (root only: losetup).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from qx_update.slots import ReadBack
from qx_update.errors import VerificationError

MIB = 1 << 20


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    backing = tmp_path / "slot.img"
    backing.write_bytes(b"\0" * (12 * MIB))
    dev = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        yield Path(dev), backing
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def _write(path: Path, data: bytes, offset: int = 0) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fdatasync(fd)
    finally:
        os.close(fd)


@pytest.mark.root
def test_the_read_back_sees_the_disk_not_what_was_written(loop: tuple[Path, Path]) -> None:
    dev, backing = loop
    data = os.urandom(10 * MIB)
    with dev.open("rb") as held:  # as the writer's fd: the last close of a block device drops its cache
        _write(dev, data)
        assert os.pread(held.fileno(), len(data), 0) == data  # the device's cache holds the written bytes
        _write(backing, b"\xff" * 512, 7 * MIB)  # the disk lost a write under the device's cache
        assert os.pread(held.fileno(), len(data), 0) == data  # ... which a cached read does not show
        on_disk = bytearray(data)
        on_disk[7 * MIB:7 * MIB + 512] = b"\xff" * 512

        rb = ReadBack(dev, len(data), label="slot", progress=False)
        rb.start()
        rb.advance(len(data))
        assert rb.digest() == hashlib.sha256(on_disk).hexdigest() != hashlib.sha256(data).hexdigest()


def test_it_reads_only_what_the_writer_reported_durable(tmp_path: Path) -> None:
    target = tmp_path / "image"
    data = os.urandom(9 * MIB + 123)
    target.write_bytes(data[:3 * MIB] + b"\0" * (len(data) - 3 * MIB))
    rb = ReadBack(target, len(data), label="slot", progress=False)
    rb.start()
    rb.advance(3 * MIB)
    # The rest is written only now, after the reader may already have hashed the first prefix.
    _write(target, data[3 * MIB:], 3 * MIB)
    rb.advance(5 * MIB)
    rb.advance(4 * MIB)  # never backwards
    rb.advance(len(data) + 10)  # never past the image
    assert rb.digest() == hashlib.sha256(data).hexdigest()


def test_a_short_image_is_an_error_and_a_stopped_reader_ends(tmp_path: Path) -> None:
    target = tmp_path / "image"
    target.write_bytes(b"x" * MIB)
    rb = ReadBack(target, 2 * MIB, label="slot", progress=False)
    rb.start()
    rb.advance(2 * MIB)
    with pytest.raises(VerificationError, match="ended at 1048576 of 2097152"):
        rb.digest()

    waiting = ReadBack(target, MIB, label="slot", progress=False)
    waiting.start()
    stopper = threading.Timer(0.2, waiting.stop)  # the pass failed: nothing more becomes durable
    stopper.start()
    waiting.join(10)
    stopper.join()
    assert not waiting.is_alive()
