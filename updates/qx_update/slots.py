"""The two root slots: which one runs, how big they are, and writing a release into the inactive one.

A slot is a path — a partition (``/dev/disk/by-partlabel/root-b``), a loop partition, or a plain file
of the slot's size: the same code writes all of them. The writer never touches the running slot
(checked by path and by device number), streams the zstd payload through ``zstd -d``, refuses more
bytes than the signed ``slot_size``, fsyncs, drops the page cache and reads the slot back to compare
with the signed ``slot_sha256``. A slot is only trusted after that read-back.

Throughput: zstd decompresses in its own process; our thread only copies from the pipe and writes,
while a background thread (:mod:`qx_update.hashing`) hashes each freshly allocated 4 MiB block; the
read-back likewise reads while the previous block is being hashed.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from qx_common import run as r
from qx_common.slot import slot_from_cmdline
from qx_common.errors import EnvironmentError_, ExternalError, InternalError
from qx_update import crashpoint, hashing
from qx_update.errors import VerificationError
from qx_common.progress import Observer, Progress

CHUNK = 4 * 1024 * 1024
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def other(slot: str) -> str:
    return "b" if slot == "a" else "a"


def running_slot(configured: str, cmdline: Path = Path("/proc/cmdline")) -> str:
    """The booted slot: the config's ``running_slot``, or ``root=PARTLABEL=root-X`` on the kernel command line."""
    if configured in ("a", "b"):
        return configured
    try:
        text = cmdline.read_text()
    except OSError as e:
        raise EnvironmentError_(f"cannot read {cmdline}: {e.strerror}") from e
    found = slot_from_cmdline(text)
    if found is None:
        raise EnvironmentError_(
            "cannot tell which slot is running: the kernel command line has no root=PARTLABEL=root-a|b",
            hint='outside a Quantix host, set running_slot = "a" (or "b") in the config file')
    return found


def size_of(path: Path) -> int:
    """Size in bytes of a slot (block device or regular file)."""
    try:
        with path.open("rb") as f:
            return f.seek(0, os.SEEK_END)
    except OSError as e:
        raise EnvironmentError_(f"slot {path}: cannot open: {e.strerror or e}",
                                hint="check the slots in the update config") from e


def guard_not_running(target: Path, running: Path) -> None:
    """Refuse to write the slot the system runs from (same path, or the device / is mounted from)."""
    if target.resolve() == running.resolve():
        raise InternalError(f"refusing to write {target}: it is the running slot")
    try:
        st = target.stat()
    except OSError as e:
        raise EnvironmentError_(f"slot {target}: {e.strerror or e}") from e
    if stat.S_ISBLK(st.st_mode) and st.st_rdev == os.stat("/").st_dev:
        raise InternalError(f"refusing to write {target}: the root filesystem is mounted from it")


def _drop_cache(fd: int) -> None:
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass


def hash_prefix(path: Path, length: int, *, progress: bool | Observer = True) -> str:
    """sha256 of the first ``length`` bytes of ``path``, read from the disk (page cache dropped first)."""
    h = hashing.BackgroundHasher(["sha256"])
    bar = Progress("verifying slot", length, enabled=progress)
    try:
        with path.open("rb", buffering=0) as f:
            _drop_cache(f.fileno())
            remaining = length
            while remaining:
                block = f.read(min(CHUNK, remaining))  # a new bytes object each time: safe to hand over
                if not block:
                    raise VerificationError(f"slot {path} ended {remaining} bytes early while reading it back")
                h.update(block)
                remaining -= len(block)
                bar.update(len(block))
        digest = h.hexdigests()["sha256"]
    finally:
        h.close()
    bar.close()
    return digest


def write_payload(payload: Path, slot: Path, *, slot_size: int, slot_sha256: str,
                  progress: bool | Observer = True) -> None:
    """Decompress ``payload`` (zstd) into ``slot``; verify size and hash while writing and on read-back."""
    capacity = size_of(slot)
    if slot_size > capacity:
        raise VerificationError(f"the release needs {slot_size} bytes but slot {slot} has {capacity}")
    zstd = r.require("zstd")
    bar = Progress("writing slot", slot_size, enabled=progress)
    h = hashing.BackgroundHasher(["sha256"])
    written = 0
    # Streamed through a pipe rather than `zstd -o`: we count and hash every byte, and stop at the
    # signed size (a decompression bomb cannot run past the slot). spawn() kills zstd if we stop early
    # (bomb, crash point, error) and otherwise waits for its real exit status after EOF.
    fd = os.open(slot, os.O_WRONLY | os.O_CLOEXEC)
    try:
        with r.spawn([zstd, "-d", "-c", "-q", str(payload)], check=False) as proc:
            assert proc.stdout is not None
            pipe = proc.stdout.fileno()
            try:
                fcntl.fcntl(pipe, F_SETPIPE_SZ, 1024 * 1024)  # fewer wake-ups between zstd and us
            except OSError:
                pass
            while True:
                # A new buffer per chunk: the hasher thread may still be reading the previous one.
                mv = memoryview(bytearray(CHUNK))
                # Fill a whole chunk before hashing and writing: big writes, few syscalls.
                n = 0
                while n < CHUNK:
                    got = os.readv(pipe, [mv[n:]])
                    if not got:
                        break
                    n += got
                if not n:
                    break
                block = mv[:n]
                if written + n > slot_size:
                    raise VerificationError(f"the payload decompresses to more than the signed {slot_size} bytes")
                view = block
                while view:
                    w = os.write(fd, view)
                    view = view[w:]
                h.update(block)
                written += n
                bar.update(n)
                if written >= CHUNK and written - n < CHUNK:
                    os.fsync(fd)
                    crashpoint.reached("write")
                if n < CHUNK:
                    break
            os.fsync(fd)
            _drop_cache(fd)
            digest = h.hexdigests()["sha256"]
    finally:
        h.close()
        os.close(fd)
    bar.close()
    if proc.returncode != 0:
        raise ExternalError(f"zstd could not decompress the payload (exit {proc.returncode}): "
                            f"{proc.stderr_text().strip()[-300:]}")
    if written != slot_size:
        raise VerificationError(f"the payload decompressed to {written} bytes, the signed slot size is {slot_size}")
    if digest != slot_sha256:
        raise VerificationError("the decompressed payload does not match the signed slot_sha256")
    readback = hash_prefix(slot, slot_size, progress=progress)
    if readback != slot_sha256:
        raise VerificationError(f"slot {slot} reads back differently from what was written (bad disk?)")
