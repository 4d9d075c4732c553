"""Clone a shut-off VM: a full copy of its disks, a new UUID and new MAC addresses, as a task.

Call order: ``parse_clone(body)`` → :meth:`Cloner.clone` (synchronous: every check, and the new
volumes reserved in libvirt under ``VmService._mutate`` — a refusal is an immediate 4xx and leaves
nothing) → the returned :class:`~qx_node.tasks.Task` copies the disks on its thread (progress by
bytes, cancellable between blocks) and defines the new VM (started when asked, through the same
admission as any start).

Invariants: the source must stay shut off while its disks are copied, so both VMs are marked
``busy`` until the task ends (start, edit, delete and a create under the new name are refused).
A copy is written to a temporary file of its own in the pool and renamed onto the new volume, so a
failed or cancelled clone leaves neither a half-written disk nor the reserved volumes nor a VM.
Holes are kept (SEEK_DATA/SEEK_HOLE): a thin 100 GiB disk with 1 GiB of data costs 1 GiB. Disks
declared ``shared`` stay shared (both VMs attach the same volume); cdroms, kernel and initrd are
referenced, not copied. A UEFI VM's NVRAM is not copied: libvirt makes the clone a fresh one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from qx_common import log
from qx_common.fs import fsync_dir
from qx_node.errors import BackendError, Conflict, InvalidField
from qx_node.libvirt_conn import mapped
from qx_node.tasks import Task, Tasks
from qx_node.vms import VmService
from qx_node.vmspec import NAME_RE, _bool, _obj, _str, valid_vm_name

_log = log.get("node.clone")
COPY_BLOCK = 4 * 1024 * 1024

CLONE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["name"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": NAME_RE.pattern, "description": "the new VM's name"},
        "start": {"type": "boolean", "default": False, "description": "start the clone when it is ready"},
    },
}


@dataclass(frozen=True)
class CloneRequest:
    name: str
    start: bool = False


def parse_clone(body: Any) -> CloneRequest:
    d = _obj(body, "", {"name", "start"})
    name = _str(d, "name", "", required=True, hint='for example "web-2"')
    assert name is not None
    valid_vm_name(name)
    return CloneRequest(name, _bool(d, "start", "", False) if "start" in d else False)


@dataclass(frozen=True)
class _Copy:
    src: str  # real path of the source disk
    dst: str  # path of the reserved new volume
    vol: str  # its volume name
    data_bytes: int  # allocated bytes of the source (what the copy writes)


class Cloner:
    def __init__(self, vms: VmService, tasks: Tasks) -> None:
        self.vms = vms
        self.tasks = tasks

    def clone(self, source: str, req: CloneRequest) -> Task:
        vms = self.vms
        created: list[str] = []
        with vms._mutate:
            dom = vms._dom(source)
            vms._not_busy(source)
            what = f"VM '{source}'"
            with mapped(what):
                if dom.isActive():
                    raise Conflict(f"{what} is running; only a shut-off VM can be cloned (its disks change "
                                   "while it runs)", hint="shut it down first")
                xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) if dom.isPersistent() else dom.XMLDesc(0)
                memory_mib = int(dom.info()[2]) // 1024
            if req.name == source:
                raise InvalidField("name: the clone needs a name of its own", field="name")
            try:
                vms.lv.conn().lookupByName(req.name)
            except libvirt.libvirtError:
                pass
            else:
                raise Conflict(f"name: VM '{req.name}' already exists", field="name", hint="choose another name")
            vms._not_busy(req.name)
            root = ET.fromstring(xml)
            plan = self._plan(root, req.name)
            vms.check_disk_space(sum(c.data_bytes for c in plan), "name")
            if req.start:
                vms._admit(req.name, memory_mib)
            try:
                copies = []
                for c, (vol_name, capacity, fmt) in zip(plan, self._volumes(plan)):
                    vol = vms.storage.create(vol_name, capacity, fmt, field="name")
                    created.append(vol.name)
                    copies.append(_Copy(c.src, vol.path, vol.name, c.data_bytes))
            except BaseException:
                self._drop(created)
                raise
            vms.busy[source] = f"being cloned to '{req.name}'"
            vms.busy[req.name] = f"being created as a clone of '{source}'"
            vms.reserved.update(created)

        def release() -> None:
            with vms._mutate:
                vms.busy.pop(source, None)
                vms.busy.pop(req.name, None)
                vms.reserved.difference_update(created)

        def work(task: Task) -> dict[str, Any]:
            try:
                return self._run(task, source, req, root, copies, memory_mib)
            except BaseException:
                self._drop(created)
                raise
            finally:
                release()

        try:
            return self.tasks.start("clone", source, work, cancellable=True)
        except BaseException:  # the thread could not start: nothing may stay reserved
            release()
            self._drop(created)
            raise

    def _plan(self, root: ET.Element, new: str) -> list[_Copy]:
        """The disks to copy (shared ones stay shared), each checked to be a file of the pool."""
        pool = os.path.realpath(self.vms.storage.pool_dir)
        plan = []
        for i, disk in enumerate(d for d in root.findall("devices/disk") if d.get("device", "disk") == "disk"):
            src = disk.find("source")
            path = src.get("file") if src is not None else None
            if not path or disk.find("shareable") is not None:
                continue
            real = os.path.realpath(path)
            if os.path.dirname(real) != pool:
                raise Conflict(f"disk {path} is outside the pool {pool}; qx-node copies only pool volumes",
                               hint="move the disk into the pool, or clone by hand")
            try:
                st = os.stat(real)
            except OSError as e:  # the VM's state, not a failure of ours: it cannot be cloned as it is
                raise Conflict(f"disk {path} cannot be read: {e.strerror}",
                               hint="the volume's file is missing; check the pool (GET /v1/storage/volumes)") from e
            ext = os.path.splitext(real)[1] or ".img"
            plan.append(_Copy(real, "", f"{new}-disk{i}{ext}", min(st.st_blocks * 512, st.st_size)))
        return plan

    def _volumes(self, plan: list[_Copy]) -> list[tuple[str, int, str]]:
        """(name, capacity, format) of each new volume, from the source volume's own description."""
        out = []
        for c in plan:
            vol = self.vms.storage.get(os.path.basename(c.src))
            out.append((c.vol, max(vol.capacity, os.stat(c.src).st_size), vol.format))
        return out

    def _drop(self, volumes: list[str]) -> None:
        for v in volumes:
            with contextlib.suppress(Exception):
                self.vms.storage.delete(v)

    def _run(self, task: Task, source: str, req: CloneRequest, root: ET.Element, copies: list[_Copy],
             memory_mib: int) -> dict[str, Any]:
        total = sum(c.data_bytes for c in copies) or 1
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            task.progress(0.98 * min(done / total, 1.0), f"copied {done // (1024 * 1024)} MiB")
            task.check()

        for c in copies:
            copy_file(c.src, Path(c.dst), advance)
        task.check()
        _retarget(root, req.name, {c.src: c.dst for c in copies})
        vms = self.vms
        with vms._mutate, mapped(f"VM '{req.name}'"):
            dom = vms.lv.conn().defineXML(ET.tostring(root, encoding="unicode"))
            if req.start:
                vms.busy.pop(req.name, None)
                try:
                    vms._admit(req.name, memory_mib)
                    dom.create()
                except BaseException:
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.undefine()
                    raise
        _log.info("clone: %s -> %s (%d disk(s), %d bytes)", source, req.name, len(copies), done)
        return vms.get(req.name)


def _retarget(root: ET.Element, new: str, disks: dict[str, str]) -> None:
    """The source's XML made the clone's: name, no UUID (libvirt makes one), no MACs (new ones), no
    NVRAM (a fresh one), disks pointing at the copies."""
    name = root.find("name")
    assert name is not None
    name.text = new
    for parent, tag in ((root, "uuid"), (root.find("os"), "nvram")):
        if parent is not None:
            for el in parent.findall(tag):
                parent.remove(el)
    for iface in root.findall("devices/interface"):
        for tag in ("mac", "target", "alias"):
            for el in iface.findall(tag):
                iface.remove(el)
    for disk in root.findall("devices/disk"):
        src = disk.find("source")
        if src is not None and src.get("file") and os.path.realpath(src.get("file", "")) in disks:
            src.set("file", disks[os.path.realpath(src.get("file", ""))])


def copy_file(src: str, dst: Path, advance: Callable[[int], None]) -> None:
    """Copy ``src`` onto ``dst`` through a temporary file in ``dst``'s directory (renamed over it
    when complete), keeping holes; ``advance(n)`` after each block (it may raise to abort)."""
    tmp = dst.parent / f".{dst.name}.clone-{secrets.token_hex(8)}"
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with open(src, "rb") as f:
            fd = f.fileno()
            size = os.fstat(fd).st_size
            os.ftruncate(out, size)
            pos = 0
            while pos < size:
                try:
                    start = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError as e:
                    if e.errno == errno.ENXIO:  # only a hole is left
                        break
                    raise
                end = os.lseek(fd, start, os.SEEK_HOLE)
                off = start
                while off < end:
                    buf = os.pread(fd, min(COPY_BLOCK, end - off), off)
                    if not buf:
                        break
                    view = memoryview(buf)
                    while view:
                        n = os.pwrite(out, view, off + len(buf) - len(view))
                        view = view[n:]
                    off += len(buf)
                    advance(len(buf))
                pos = end
        os.fsync(out)
        os.close(out)
        out = -1
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    except OSError as e:
        raise BackendError(f"copying {src}: {e.strerror}", hint="check the pool's free space and the data partition") from e
    finally:
        if out >= 0:
            os.close(out)
        tmp.unlink(missing_ok=True)
