"""The host's storage pool: one libvirt ``dir`` pool on the data partition, and its volumes.

``Storage.ensure_pool(conn)`` runs on every (re)connect: it defines, builds, starts and
autostarts the pool when missing (default name ``default``, path ``/var/lib/libvirt/images``,
``--pool-dir`` in tests). Every volume name is validated (:func:`~qx_node.vmspec.valid_volume_name`)
and every resolved path is checked to be a direct child of the pool directory, so no API call can
reach a file outside the pool. Uploads are written to a hidden temporary file of their own, fsynced
and linked into place (see :meth:`Storage.upload`): a failed, interrupted or concurrent upload
leaves nothing behind and never touches another request's file.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import libvirt
from starlette.concurrency import run_in_threadpool as run_sync
from starlette.requests import ClientDisconnect

from qx_common import log
from qx_node.errors import BackendError, Conflict, InvalidField, NotFound, PayloadTooLarge, Unavailable
from qx_node.libvirt_conn import Libvirt, mapped
from qx_node.tasks import Task
from qx_node.vmspec import valid_volume_name

_log = log.get("node.storage")
GiB = 1024**3
# Keep this much free on the data partition after an upload (libvirt/qemu logs, VM state).
UPLOAD_RESERVE = 256 * 1024**2
WRITE_BLOCK = 1024 * 1024  # uploads are written (on a worker thread) in blocks of this size


@dataclass(frozen=True)
class Volume:
    name: str
    path: str
    format: str
    capacity: int
    allocation: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Storage:
    def __init__(self, lv: Libvirt, pool_dir: Path, pool_name: str = "default") -> None:
        self.lv = lv
        self.pool_dir = pool_dir
        self.pool_name = pool_name
        self._uploads_lock = threading.Lock()
        self._uploading: set[str] = set()

    # -- pool ---------------------------------------------------------------------------------
    def ensure_pool(self, conn: libvirt.virConnect) -> None:
        try:
            pool = conn.storagePoolLookupByName(self.pool_name)
        except libvirt.libvirtError:
            self.pool_dir.mkdir(parents=True, exist_ok=True)
            root = ET.Element("pool", type="dir")
            ET.SubElement(root, "name").text = self.pool_name
            ET.SubElement(ET.SubElement(root, "target"), "path").text = str(self.pool_dir)
            pool = conn.storagePoolDefineXML(ET.tostring(root, encoding="unicode"))
            pool.build(0)
            _log.info("storage: defined pool %s at %s", self.pool_name, self.pool_dir)
        if not pool.isActive():
            pool.create(0)
        if not pool.autostart():
            pool.setAutostart(1)
        path = ET.fromstring(pool.XMLDesc()).findtext("target/path")
        if path and Path(path) != self.pool_dir:
            _log.warning("storage: pool %s is at %s (not %s); using libvirt's path", self.pool_name, path,
                         self.pool_dir)
            self.pool_dir = Path(path)

    def _pool(self) -> libvirt.virStoragePool:
        with mapped(f"storage pool '{self.pool_name}'"):
            return self.lv.conn().storagePoolLookupByName(self.pool_name)

    def pool_info(self) -> dict[str, Any]:
        pool = self._pool()
        with mapped(f"storage pool '{self.pool_name}'"):
            _state, capacity, allocation, available = pool.info()
        return {"name": self.pool_name, "path": str(self.pool_dir), "capacity": capacity,
                "allocation": allocation, "available": available}

    # -- volumes ------------------------------------------------------------------------------
    def _vol(self, name: str, field: str = "name") -> libvirt.virStorageVol:
        valid_volume_name(name, field)
        pool = self._pool()
        try:
            return pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            pass
        # A file copied into the pool directory by hand appears after a refresh.
        with mapped(f"storage pool '{self.pool_name}'"):
            pool.refresh(0)
        try:
            return pool.storageVolLookupByName(name)
        except libvirt.libvirtError as e:
            raise NotFound(f"{field}: volume '{name}' does not exist in pool '{self.pool_name}'", field=field,
                           hint="GET /v1/storage/volumes lists the volumes") from e

    def exists(self, name: str) -> bool:
        """Whether the pool has a volume of this name (a file copied in by hand too, as in :meth:`_vol`)."""
        try:
            self._vol(name)
        except NotFound:
            return False
        return True

    def _describe(self, vol: libvirt.virStorageVol) -> Volume:
        with mapped(f"volume '{vol.name()}'"):
            xml = ET.fromstring(vol.XMLDesc(0))
            _type, capacity, allocation = vol.info()
            path = vol.path()
        fmt = xml.find("target/format")
        return Volume(vol.name(), path, fmt.get("type", "raw") if fmt is not None else "raw", capacity, allocation)

    def path_of(self, name: str, field: str) -> str:
        """The absolute path of an existing volume, guaranteed to be inside the pool directory."""
        return self.resolve(name, field).path

    def resolve(self, name: str, field: str) -> Volume:
        """An existing volume (path guaranteed inside the pool directory); errors name ``field``."""
        vol = self._describe(self._vol(name, field))
        self._check_inside(vol.path, field)
        return vol

    def _check_inside(self, path: str, field: str) -> None:
        real = Path(os.path.realpath(path))
        if real.parent != Path(os.path.realpath(self.pool_dir)):
            raise InvalidField(f"{field}: volume path {path} is outside the pool {self.pool_dir}", field=field)

    def list(self) -> list[Volume]:
        pool = self._pool()
        with mapped(f"storage pool '{self.pool_name}'"):
            pool.refresh(0)
            vols = pool.listAllVolumes(0)
        return sorted((self._describe(v) for v in vols), key=lambda v: v.name)

    def get(self, name: str) -> Volume:
        return self._describe(self._vol(name))

    def create(self, name: str, size_bytes: int, fmt: str = "qcow2", field: str = "name") -> Volume:
        valid_volume_name(name, field)
        if fmt not in ("qcow2", "raw"):
            raise InvalidField(f"format: '{fmt}' is not one of qcow2, raw", field="format")
        pool = self._pool()
        with mapped(f"storage pool '{self.pool_name}'"):
            pool.refresh(0)
        try:
            pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            pass
        else:
            raise Conflict(f"{field}: volume '{name}' already exists", field=field,
                           hint="choose another name or delete the volume first")
        root = ET.Element("volume")
        ET.SubElement(root, "name").text = name
        ET.SubElement(root, "capacity", unit="bytes").text = str(size_bytes)
        ET.SubElement(root, "allocation", unit="bytes").text = "0"
        ET.SubElement(ET.SubElement(root, "target"), "format", type=fmt)
        with mapped(f"volume '{name}'"):
            vol = pool.createXML(ET.tostring(root, encoding="unicode"), 0)
        _log.info("storage: created volume %s (%d bytes, %s)", name, size_bytes, fmt)
        return self._describe(vol)

    def delete(self, name: str, in_use_by: list[str] | None = None) -> None:
        vol = self._vol(name)
        if in_use_by:
            raise Conflict(f"volume '{name}' is used by VM(s) {', '.join(in_use_by)}",
                           hint="delete the VM or detach the disk first")
        with mapped(f"volume '{name}'"):
            vol.delete(0)
        _log.info("storage: deleted volume %s", name)

    async def upload(self, name: str, chunks: AsyncIterator[bytes], length: int | None,
                     task: Task | None = None) -> Volume:
        """Write an uploaded file (an ISO) into the pool atomically, then make libvirt see it.

        Refused before a byte is written when libvirtd or the pool is not there (503), when the
        name exists or is being uploaded by another request (409) or does not fit (413). Each
        request writes its own temporary file (a random name, ``O_EXCL``) and removes only that one;
        the finished file is linked into place, which fails instead of replacing a file that appeared
        meanwhile. File I/O runs on worker threads, in blocks of ``WRITE_BLOCK``: the event loop
        keeps serving other requests during an upload. ``task`` gets the progress (when the length
        is known) and can cancel the upload between blocks (a 409; nothing is left).
        """
        valid_volume_name(name)
        await run_sync(self._pool)  # 503 while libvirtd is unreachable: nothing is written
        with self._uploads_lock:
            if name in self._uploading:
                raise Conflict(f"name: an upload of '{name}' is already in progress", field="name",
                               hint="wait for it to finish, or upload under another name")
            self._uploading.add(name)
        try:
            return await self._upload(name, chunks, length, task)
        finally:
            with self._uploads_lock:
                self._uploading.discard(name)

    async def _upload(self, name: str, chunks: AsyncIterator[bytes], length: int | None,
                      task: Task | None) -> Volume:
        target = self.pool_dir / name
        try:
            exists = await run_sync(os.path.lexists, target)
            free = await run_sync(lambda: shutil.disk_usage(self.pool_dir).free) - UPLOAD_RESERVE
        except OSError as e:
            raise Unavailable(f"storage pool directory {self.pool_dir}: {e.strerror}",
                              hint="the pool's directory is missing or unreadable: check the data partition") from e
        if exists:
            raise Conflict(f"name: volume '{name}' already exists", field="name",
                           hint="choose another name or delete the volume first")
        if length is not None and length > free:
            raise PayloadTooLarge(f"upload of {length} bytes does not fit: {max(free, 0)} bytes free in the pool")
        tmp = self.pool_dir / f".{name}.upload-{secrets.token_hex(8)}"
        fd = await run_sync(os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        written = 0
        try:
            try:
                buf = bytearray()
                async for chunk in chunks:
                    written += len(chunk)
                    if written > free:
                        raise PayloadTooLarge(f"upload exceeds the {max(free, 0)} bytes free in the pool")
                    buf += chunk
                    if len(buf) >= WRITE_BLOCK:
                        await run_sync(write_all, fd, bytes(buf))
                        buf.clear()
                        if task is not None:
                            task.check()
                            if length:
                                task.progress(0.99 * written / length, f"received {written // (1024 * 1024)} MiB")
                if buf:
                    await run_sync(write_all, fd, bytes(buf))
            except ClientDisconnect:
                raise InvalidField(f"body: the client disconnected after {written} bytes", field="body") from None
            if length is not None and written != length:
                raise InvalidField(f"body: received {written} of {length} bytes", field="body")
            await run_sync(sync, fd)
            await run_sync(self._place, tmp, target, name)
        finally:
            await run_sync(_close_and_remove, fd, tmp)  # our own temporary file, never another's
        _log.info("storage: uploaded %s (%d bytes)", name, written)
        return await run_sync(self._describe_file, name, target, written)

    def _place(self, tmp: Path, target: Path, name: str) -> None:
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, target)  # unlike rename, never replaces a file that appeared meanwhile
        except FileExistsError:
            raise Conflict(f"name: volume '{name}' already exists", field="name",
                           hint="another request created it during this upload") from None
        sync_dir(self.pool_dir)

    def _describe_file(self, name: str, target: Path, size: int) -> Volume:
        try:
            return self._describe(self._vol(name))
        except (NotFound, Unavailable, BackendError):
            # The file is in place; drivers without a real pool backend (test:///), or a libvirtd that
            # went away meanwhile, do not show it yet: report the file itself.
            return Volume(name, str(target), "raw", size, size)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def sync(fd: int) -> None:
    os.fsync(fd)


def sync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _close_and_remove(fd: int, tmp: Path) -> None:
    os.close(fd)
    tmp.unlink(missing_ok=True)
