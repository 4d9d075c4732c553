"""The two root slots: which one runs, how big they are, and writing a release into the inactive one.

A slot is a path — a partition (``/dev/disk/by-partlabel/root-b``), a loop partition, or a plain file
of the slot's size: the same code writes all of them. The writer never touches the running slot
(checked by path and by device number), streams the zstd payload through ``zstd -d``, refuses more
bytes than the signed ``slot_size``, syncs, and reads the slot back from the disk (page cache dropped)
to compare with the signed ``slot_sha256``. A slot is only trusted after that read-back.

Throughput: zstd decompresses in its own process; our thread only copies from the pipe and writes,
while a background thread (:mod:`qx_update.hashing`) hashes each freshly allocated 4 MiB block, and
another (:class:`ReadBack`) reads back and hashes each synced prefix behind the writer, so the read-back
costs no pass of its own after the write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import stat
import threading
from pathlib import Path

from qx_common import run as r
from qx_common.slot import booted_slot
from qx_common.errors import EnvironmentError_, ExternalError, InternalError, UserError
from qx_update import crashpoint, hashing, seal
from qx_update.errors import VerificationError
from qx_common.progress import Observer, Progress

CHUNK = 4 * 1024 * 1024
# Bytes written between syncs of the slot: each synced prefix is read back behind the writer (ReadBack).
SYNC_EVERY = 32 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def other(slot: str) -> str:
    return "b" if slot == "a" else "a"


def running_slot(configured: str, cmdline: Path = Path("/proc/cmdline"), *,
                 by_partuuid: Path = Path("/dev/disk/by-partuuid"),
                 sys_class_block: Path = Path("/sys/class/block")) -> str:
    """The booted slot: the config's ``running_slot``, or the one the kernel command line booted
    (``root=PARTLABEL=root-X``, or the partition its ``roothash=`` names: :func:`qx_common.slot.booted_slot`)."""
    if configured in ("a", "b"):
        return configured
    try:
        text = cmdline.read_text()
    except OSError as e:
        raise EnvironmentError_(f"cannot read {cmdline}: {e.strerror}") from e
    found = booted_slot(text, by_partuuid=by_partuuid, sys_class_block=sys_class_block)
    if found is None:
        raise EnvironmentError_(
            "cannot tell which slot is running: the kernel command line has no root=PARTLABEL=root-a|b, "
            "nor a roothash= whose data partition (by its GPT UUID) is root-a or root-b",
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


def guard_not_running(target: Path, running: Path, *, root: Path = Path("/"), sys_block: Path = Path("/sys/dev/block")) -> None:
    """Refuse to write the slot the system runs from: the same path, the device ``root`` is mounted
    from, or a device under it — a dm-verity root is ``/dev/mapper/root`` over the slot's partition, and
    which slot that is must not depend on which one the partition UUIDs (:func:`qx_common.slot.booted_slot`)
    were taken for."""
    if target.resolve() == running.resolve():
        raise InternalError(f"refusing to write {target}: it is the running slot")
    try:
        st = target.stat()
    except OSError as e:
        raise EnvironmentError_(f"slot {target}: {e.strerror or e}") from e
    if not stat.S_ISBLK(st.st_mode):
        return
    root_dev = os.stat(root).st_dev
    if st.st_rdev == root_dev:
        raise InternalError(f"refusing to write {target}: the root filesystem is mounted from it")
    target_id = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    for under in _devices_below(f"{os.major(root_dev)}:{os.minor(root_dev)}", sys_block):
        if under == target_id:
            raise InternalError(f"refusing to write {target}: the root filesystem's device ({root}) is built on it")


def guard_verity(verity: Path, *, field: str, label: str, slot: Path, running: Path, running_verity: Path | None,
                 root: Path = Path("/"), sys_block: Path = Path("/sys/dev/block")) -> None:
    """Refuse to seal into ``verity`` (config ``field``, e.g. ``verity.b``: the target slot's hash
    partition) when it is — by any name: a udev link, ``/dev/sdX``, a copy of the path — the slot being
    sealed, the running slot or the running slot's own hash partition, or a device the root filesystem is
    built on (:func:`guard_not_running`: a dm-verity root sits on both its data and hash partitions); and
    when it is a GPT partition not named ``label`` (``root-b-verity``: the data partition, say). The
    config's own check compares the paths as written; sealing gives the partition new UUIDs and writes a
    hash tree over its start, which would destroy any of these. Writes nothing."""
    hint = ("give each slot its own verity (hash) partition in [verity]: "
            'a = "/dev/disk/by-partlabel/root-a-verity", b = "/dev/disk/by-partlabel/root-b-verity"')
    name = seal.partition_name(verity)
    if name is not None and name != label:
        raise UserError(f"config '{field}': {verity} is the partition named {name!r}, not {label!r}; "
                        "nothing was installed", hint=hint)
    mine = _identity(verity)
    for what, other in (("slot it seals", slot), ("running slot", running),
                        ("running slot's verity partition", running_verity)):
        if other is not None and mine is not None and _identity(other) == mine:
            raise UserError(f"config '{field}': {verity} is the {what} ({other}); nothing was installed", hint=hint)
    guard_not_running(verity, running, root=root, sys_block=sys_block)


def _identity(path: Path) -> tuple[int, ...] | None:
    """What ``path`` is, whatever it is called: a block device's number, else a file's (device, inode);
    None when it does not exist."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_rdev,) if stat.S_ISBLK(st.st_mode) else (st.st_dev, st.st_ino)


def _devices_below(dev: str, sys_block: Path, depth: int = 0) -> list[str]:
    """``MAJ:MIN`` of every device a (device-mapper) device is stacked on, from sysfs ``slaves/``."""
    if depth > 8:
        return []
    out: list[str] = []
    try:
        slaves = list((sys_block / dev / "slaves").iterdir())
    except OSError:
        return out
    for s in slaves:
        try:
            below = (s / "dev").read_text().strip()
        except OSError:
            continue
        out += [below, *_devices_below(below, sys_block, depth + 1)]
    return out


class ReadBack(threading.Thread):
    """The read-back proof of a written image, overlapped with writing it: the image is read back *from
    the disk* and hashed in order, behind the writer. The writer must only move forward and never write
    before a prefix it reported again (every writer here writes in order: :func:`write_payload`, both
    paths of :mod:`qx_update.chunked`), so each prefix it reports synced (:meth:`advance`) is final and is
    read from the device with ``O_DIRECT`` — past the page cache, which still holds what was written —
    while the writer goes on with what follows.

    Why ``O_DIRECT`` and not dropping the cache range by range: the kernel drops only whole folios, and a
    block device's page cache uses large ones, so the folio around a prefix's end (a chunk boundary) stays
    cached and would be hashed from memory (measured on a loop device: a 4 KiB-aligned range drop kept
    the data of the folio it started in). Prefixes are read up to a page boundary (``O_DIRECT``'s
    alignment); the last one to the end of the image. Where ``O_DIRECT`` is refused (tmpfs: the cache is
    the storage) the reader reads through the cache, dropping the whole file's clean pages each time.
    :meth:`digest` — called by the writer once it is done, its own progress closed — shows
    what is left to read back as the ``verifying <label>`` phase, from the writer's thread (one thread
    reports progress), and gives the sha256 of the whole image; :meth:`stop` ends the thread instead."""

    BLOCK = 4 << 20
    PAGE = os.sysconf("SC_PAGE_SIZE")

    def __init__(self, target: Path, length: int, *, label: str, progress: bool | Observer) -> None:
        super().__init__(name="qx-update-readback", daemon=True)
        self.length = length
        self.done = 0                       # bytes read back and hashed (written by the reader thread only)
        try:
            self._fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
            self._direct = True
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            self._fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
            self._direct = False
        self._cond = threading.Condition()
        self._durable = 0
        self._halted = False
        self._sha = ""
        self.error: BaseException | None = None
        self._label = f"verifying {label}"
        self._progress = progress

    def advance(self, upto: int) -> None:
        """Bytes before ``upto`` are written, synced and will not be written again."""
        upto = self.length if upto >= self.length else upto - upto % self.PAGE
        with self._cond:
            if upto > self._durable:
                self._durable = upto
                self._cond.notify()

    def _wait(self, done: int) -> int:
        with self._cond:
            while self._durable <= done and not self._halted:
                self._cond.wait()
            return -1 if self._halted else self._durable

    def run(self) -> None:
        h = hashlib.sha256()
        buf = mmap.mmap(-1, self.BLOCK)  # page-aligned, as O_DIRECT wants; reused (hashed before the next read)
        try:
            while self.done < self.length:
                upto = self._wait(self.done)
                if upto < 0:
                    return
                if not self._direct:
                    with contextlib.suppress(OSError):  # a hint to the kernel; not every file system honours it
                        os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)
                while self.done < upto:
                    want = min(self.BLOCK, upto - self.done)
                    want += -want % self.PAGE  # the image's last bytes: a whole page (a short read at EOF)
                    try:
                        got = os.preadv(self._fd, [memoryview(buf)[:want]], self.done)
                    except OSError as e:
                        if e.errno != errno.EINVAL or not self._direct:
                            raise
                        self._buffered()  # a file system that opens with O_DIRECT but will not read so
                        continue
                    if not got:
                        raise VerificationError(f"the image ended at {self.done} of {self.length} bytes "
                                                "while reading it back")
                    got = min(got, upto - self.done)
                    h.update(memoryview(buf)[:got])  # GIL released: beside zstd and the writer
                    self.done += got
            self._sha = h.hexdigest()
        except BaseException as e:  # noqa: BLE001 - raised in the writing thread by digest()
            self.error = e
        finally:
            buf.close()

    def _buffered(self) -> None:
        fd = os.open(f"/proc/self/fd/{self._fd}", os.O_RDONLY | os.O_CLOEXEC)
        os.close(self._fd)
        self._fd, self._direct = fd, False
        with contextlib.suppress(OSError):
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def _close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def stop(self) -> None:
        """The writer failed: end the reader where it is (nothing more becomes durable)."""
        try:
            with self._cond:
                self._halted = True
                self._cond.notify()
            if self.ident is not None:  # started
                self.join()
        finally:
            self._close()

    def digest(self) -> str:
        """The read-back sha256 of the whole image (the writer must have reported all of it)."""
        try:
            bar = Progress(self._label, self.length, start=self.done, enabled=self._progress)
            while self.is_alive():
                self.join(0.25)
                bar.update(self.done - bar.done)
            bar.update(self.done - bar.done)  # also when nothing was left: the phase is always reported
        except BaseException:
            self.stop()
            raise
        self._close()
        if self.error is not None:
            if isinstance(self.error, OSError):
                raise ExternalError(f"reading the written image back failed: {self.error}",
                                    hint="check the disk (dmesg); run the update again") from self.error
            raise self.error
        bar.close()
        return self._sha


def write_payload(payload: Path, slot: Path, *, slot_size: int, slot_sha256: str,
                  progress: bool | Observer = True) -> None:
    """Decompress ``payload`` (zstd) into ``slot``; verify size and hash while writing and on read-back
    (:class:`ReadBack`, behind the writer: the slot is synced every :data:`SYNC_EVERY` bytes)."""
    capacity = size_of(slot)
    if slot_size > capacity:
        raise VerificationError(f"the release needs {slot_size} bytes but slot {slot} has {capacity}")
    zstd = r.require("zstd")
    bar = Progress("writing slot", slot_size, enabled=progress)
    h = hashing.BackgroundHasher(["sha256"])
    written = synced = 0
    reader: ReadBack | None = None
    # Streamed through a pipe rather than `zstd -o`: we count and hash every byte, and stop at the
    # signed size (a decompression bomb cannot run past the slot). spawn() kills zstd if we stop early
    # (bomb, crash point, error) and otherwise waits for its real exit status after EOF.
    fd = os.open(slot, os.O_WRONLY | os.O_CLOEXEC)
    try:
        reader = ReadBack(slot, slot_size, label="slot", progress=progress)
        reader.start()
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
                if written - synced >= SYNC_EVERY:
                    os.fdatasync(fd)
                    synced = written
                    reader.advance(synced)
                if n < CHUNK:
                    break
            os.fsync(fd)
            digest = h.hexdigests()["sha256"]
        bar.close()
        if proc.returncode != 0:
            raise ExternalError(f"zstd could not decompress the payload (exit {proc.returncode}): "
                                f"{proc.stderr_text().strip()[-300:]}")
        if written != slot_size:
            raise VerificationError(f"the payload decompressed to {written} bytes, the signed slot size is {slot_size}")
        if digest != slot_sha256:
            raise VerificationError("the decompressed payload does not match the signed slot_sha256")
        reader.advance(slot_size)
        reader, r_ = None, reader
        readback = r_.digest()
    finally:
        h.close()
        if reader is not None:
            reader.stop()  # the write failed: the reader stops where it is
        os.close(fd)
    if readback != slot_sha256:
        raise VerificationError(f"slot {slot} reads back differently from what was written (bad disk?)")
