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
import time
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


@pytest.mark.root
def test_a_prefix_that_ends_inside_a_page_is_read_from_the_disk_too(loop: tuple[Path, Path]) -> None:
    """Chunk boundaries are not page-aligned, and the kernel drops only whole pages from its cache: the
    page holding a reported prefix's end must still come from the disk."""
    dev, backing = loop
    data = os.urandom(10 * MIB)
    boundary = 5 * MIB + 1000
    with dev.open("rb") as held:
        _write(dev, data)
        assert os.pread(held.fileno(), len(data), 0) == data
        _write(backing, b"\xee" * 512, 5 * MIB)  # the disk lost a write in the page the boundary falls in
        on_disk = bytearray(data)
        on_disk[5 * MIB:5 * MIB + 512] = b"\xee" * 512

        rb = ReadBack(dev, len(data), label="slot", progress=False)
        rb.start()
        rb.advance(boundary)
        deadline = time.monotonic() + 30
        while rb.done < 5 * MIB and time.monotonic() < deadline:  # the first prefix read on its own
            time.sleep(0.01)
        assert rb.done == 5 * MIB, "the reader did not read the first prefix on its own (to its page boundary)"
        rb.advance(len(data))
        assert rb.digest() == hashlib.sha256(on_disk).hexdigest()


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

    never_started = ReadBack(target, MIB, label="slot", progress=False)
    never_started.stop()  # the writer failed before starting it: no join of a thread never started


def test_the_verifying_phase_is_reported_once_from_the_caller(tmp_path: Path) -> None:
    """Progress comes from the thread that calls digest() (after the writer's own bars), even when the
    read-back had nothing left to do: the --json contract has a 'verifying slot' phase on every apply."""
    target = tmp_path / "image"
    data = os.urandom(2 * MIB)
    target.write_bytes(data)
    seen: list[tuple[str, int, int, str]] = []
    rb = ReadBack(target, len(data), label="slot",
                  progress=lambda label, done, total: seen.append((label, done, total,
                                                                   threading.current_thread().name)))
    rb.start()
    rb.advance(len(data))
    rb.join(10)  # everything read back before the caller asks
    assert seen == []
    assert rb.digest() == hashlib.sha256(data).hexdigest()
    assert seen and seen[-1][:3] == ("verifying slot", len(data), len(data))
    assert {t for *_, t in seen} == {threading.current_thread().name}

