"""VM snapshots (libvirt internal snapshots: qcow2 disks, and the memory of a running VM).

``parse_snapshot_request(body)`` validates ``POST /v1/vms/{name}/snapshots``: ``name`` (the VM
name alphabet), optional ``description`` and ``memory``. ``memory`` defaults to whether the VM is
running; asking for memory of a shut-off VM is a 409. A running VM snapshotted without memory is
asked of libvirt as such (``<memory snapshot='no'/>``) and whatever libvirt really did is reported
(``memory`` in the answer is read back from the snapshot).

``SnapshotService`` lists snapshots as a tree (``{"current", "snapshots": [{..., "children": [...]}]}``),
creates, reverts (the VM's disks — and, for a snapshot with memory, its memory and power state —
return to the snapshot's) and deletes (children then hang from the deleted one's parent).

Creating holds the VM ``busy`` ("taking snapshot 'x'") from the checks to the end: a second snapshot,
a revert, a delete of the VM or an edit meanwhile is a 409 naming it, never a wait on libvirt's job lock.

Taking a snapshot is a task (``POST .../snapshots`` answers 202 with it, see :mod:`qx_node.api.longops`;
``create_task``: the checks first, at once); one with memory reports progress and can be cancelled.
What libvirt offers for it was measured (libvirt 11.3, QEMU 10, an internal snapshot of a
1 GiB guest with 400 MiB of random data in RAM, 2.8 s): ``virDomainGetJobStats`` answers type NONE
and only once the snapshot has ended (the query waits for it), and ``virDomainAbortJob`` answers "no
job is active". (Only external memory snapshots run as a migration job with data_processed/total and
an abortable job; our snapshots are internal, kept inside the qcow2 images.) So the progress is
measured where the memory goes: the bytes QEMU writes into the VM's qcow2 images (the sum of their
allocation growth, ``st_blocks``), against the VM's current memory, the most it can write; the
message says both in MiB. A cancel tries ``abortJob`` (which a libvirt that can abort honours:
the snapshot then fails "aborted" and leaves nothing) and otherwise lets the snapshot end and
deletes it. Either way the task ends ``cancelled`` with no snapshot kept; a failed snapshot that
libvirt left behind (it should not, with ``VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC``) is deleted too.
"""

from __future__ import annotations

import contextlib
import os
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import libvirt

from qx_common import log
from qx_node.errors import Conflict, NotFound
from qx_node.libvirt_conn import STATES, mapped, translate
from qx_node.tasks import Cancelled, Task, Tasks
from qx_node.vmedit import MAX_DESCRIPTION, valid_description
from qx_node.vmspec import NAME_RE, _bool, _obj, _str, valid_vm_name

_log = log.get("node.snapshots")
POLL_SECONDS = 0.25  # how often a snapshot task measures the memory written
_MIB = 1024 * 1024


@dataclass(frozen=True)
class SnapshotRequest:
    name: str
    description: str | None = None
    memory: bool | None = None  # None: with memory when the VM runs


def parse_snapshot_request(body: Any) -> SnapshotRequest:
    d = _obj(body, "", {"name", "description", "memory"})
    name = _str(d, "name", "", required=True, hint='for example "before-upgrade"')
    assert name is not None
    valid_vm_name(name)
    description = valid_description(d["description"]) if "description" in d and d["description"] is not None else None
    memory = _bool(d, "memory", "", False) if "memory" in d else None
    return SnapshotRequest(name, description, memory)


SNAPSHOT_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["name"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": NAME_RE.pattern},
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
        "memory": {"type": "boolean", "description": "save the memory of the running VM too (default: when running)"},
    },
}


class SnapshotService:
    def __init__(self, vms: Any) -> None:
        self.vms = vms  # VmService: _dom(name), summary(dom)

    def _snap(self, dom: libvirt.virDomain, vm: str, name: str) -> libvirt.virDomainSnapshot:
        valid_vm_name(name, "snapshot")
        try:
            return dom.snapshotLookupByName(name, 0)
        except libvirt.libvirtError as e:
            if e.get_error_code() == getattr(libvirt, "VIR_ERR_NO_DOMAIN_SNAPSHOT", 72):
                raise NotFound(f"VM '{vm}' has no snapshot '{name}'", field="snapshot",
                               hint=f"GET /v1/vms/{vm}/snapshots lists them") from e
            with mapped(f"snapshot '{name}' of VM '{vm}'"):
                raise

    @staticmethod
    def _describe(snap: libvirt.virDomainSnapshot, current: str | None) -> dict[str, Any]:
        root = ET.fromstring(snap.getXMLDesc(0))
        mem = root.find("memory")
        created = root.findtext("creationTime")
        return {
            "name": root.findtext("name"),
            "description": root.findtext("description"),
            "created": int(created) if created and created.isdigit() else None,
            "state": root.findtext("state"),
            "memory": mem is not None and mem.get("snapshot", "no") != "no",
            "parent": root.findtext("parent/name"),
            "current": root.findtext("name") == current,
        }

    @staticmethod
    def _current(dom: libvirt.virDomain) -> str | None:
        if not dom.hasCurrentSnapshot(0):
            return None
        return dom.snapshotCurrent(0).getName()  # type: ignore[no-any-return]

    def tree(self, vm: str) -> dict[str, Any]:
        dom = self.vms._dom(vm)
        with mapped(f"snapshots of VM '{vm}'"):
            current = self._current(dom)
            flat = [self._describe(s, current) for s in dom.listAllSnapshots(0)]
        by_name = {s["name"]: {**s, "children": []} for s in flat}
        roots = []
        for s in sorted(by_name.values(), key=lambda s: (s["created"] or 0, s["name"])):
            parent = by_name.get(s["parent"])
            (parent["children"] if parent is not None else roots).append(s)
        return {"vm": vm, "current": current, "count": len(flat), "snapshots": roots}

    def get(self, vm: str, name: str) -> dict[str, Any]:
        dom = self.vms._dom(vm)
        snap = self._snap(dom, vm, name)
        with mapped(f"snapshot '{name}' of VM '{vm}'"):
            out = self._describe(snap, self._current(dom))
            out["children"] = sorted(c.getName() for c in snap.listAllChildren(0))
        return out

    def create(self, vm: str, req: SnapshotRequest, task: Task | None = None) -> dict[str, Any]:
        """Take the snapshot; ``task`` (a snapshot task) gets progress and may cancel it."""
        dom, memory = self._begin(vm, req)
        return self._take(vm, req, dom, memory, task)

    def create_task(self, vm: str, req: SnapshotRequest, tasks: Tasks) -> Task:
        """Take the snapshot as a task (the route's default): the checks and marking the VM busy
        now (a refusal is a 4xx before any task exists), the snapshot on the task's thread."""
        dom, memory = self._begin(vm, req)
        try:
            return tasks.start("snapshot", vm, lambda t: self._take(vm, req, dom, memory, t), cancellable=True)
        except BaseException:  # no task (too many running): the VM must not stay busy
            self.vms.busy.pop(vm, None)
            raise

    def _begin(self, vm: str, req: SnapshotRequest) -> tuple[libvirt.virDomain, bool]:
        """Every check, then the VM marked busy: (its domain, whether the memory is saved)."""
        dom = self.vms._dom(vm)
        with self.vms._mutate:  # the checks and marking the VM busy are one step against other snapshots
            self.vms._not_busy(vm)
            with mapped(f"VM '{vm}'"):
                running = self.vms._running(dom)
                try:
                    dom.snapshotLookupByName(req.name, 0)
                except libvirt.libvirtError:
                    pass
                else:
                    raise Conflict(f"name: VM '{vm}' already has a snapshot '{req.name}'", field="name",
                                   hint="choose another name or delete that snapshot first")
            memory = running if req.memory is None else req.memory
            if memory and not running:
                raise Conflict(f"memory: VM '{vm}' is not running, so it has no memory to save", field="memory",
                               hint="leave memory out (or false) for a disk snapshot of a shut-off VM")
            self.vms.busy[vm] = f"taking snapshot '{req.name}'"
        return dom, memory

    def _take(self, vm: str, req: SnapshotRequest, dom: libvirt.virDomain, memory: bool,
              task: Task | None) -> dict[str, Any]:
        """Take the snapshot :meth:`_begin` checked; the VM is free again at the end, whatever happens."""
        try:
            if task is not None:
                task.check()
            root = ET.Element("domainsnapshot")
            ET.SubElement(root, "name").text = req.name
            if req.description:
                ET.SubElement(root, "description").text = req.description
            ET.SubElement(root, "memory", snapshot="internal" if memory else "no")
            xml = ET.tostring(root, encoding="unicode")
            if memory and task is not None:
                snap = self._create_watched(dom, vm, req.name, xml, task)
            else:
                with mapped(f"snapshot '{req.name}' of VM '{vm}'"):
                    snap = self._create_xml(dom, xml)
                if task is not None and task.cancel_requested:  # asked while libvirt took it: undo
                    self._discard(dom, vm, req.name)
                    raise Cancelled(f"snapshot '{req.name}' of VM '{vm}' was cancelled", hint="nothing of it was kept")
            with mapped(f"snapshot '{req.name}' of VM '{vm}'"):
                out = self._describe(snap, self._current(dom))
        finally:
            self.vms.busy.pop(vm, None)
        _log.info("snapshots: %s of %s (memory %s)", req.name, vm, out["memory"])
        return out

    @staticmethod
    def _create_xml(dom: libvirt.virDomain, xml: str) -> libvirt.virDomainSnapshot:
        flags = getattr(libvirt, "VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC", 0)
        try:
            return dom.snapshotCreateXML(xml, flags)
        except libvirt.libvirtError as e:
            if flags and e.get_error_code() in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                return dom.snapshotCreateXML(xml, 0)  # test:///: no ATOMIC
            raise

    @staticmethod
    def _images(dom: libvirt.virDomain) -> list[str]:
        """The VM's qcow2 disk files (where an internal snapshot writes the memory)."""
        root = ET.fromstring(dom.XMLDesc(0))
        return [src.get("file", "") for d in root.findall("devices/disk[@device='disk']")
                if (drv := d.find("driver")) is not None and drv.get("type") == "qcow2"
                and (src := d.find("source")) is not None and src.get("file")]

    @staticmethod
    def _allocated(paths: list[str]) -> int:
        total = 0
        for p in paths:
            with contextlib.suppress(OSError):  # a file we cannot stat counts nothing, it does not fail
                total += os.stat(p).st_blocks * 512
        return total

    def _discard(self, dom: libvirt.virDomain, vm: str, name: str) -> bool:
        """Delete snapshot ``name`` if libvirt has it (a cancelled or failed one); True if it was there."""
        try:
            snap = dom.snapshotLookupByName(name, 0)
        except libvirt.libvirtError:
            return False
        with mapped(f"snapshot '{name}' of VM '{vm}' (removing it after a cancel or failure)"):
            snap.delete(0)
        _log.info("snapshots: removed %s of %s after a cancel or failure", name, vm)
        return True

    def _create_watched(self, dom: libvirt.virDomain, vm: str, name: str, xml: str,
                        task: Task) -> libvirt.virDomainSnapshot:
        """snapshotCreateXML on a thread of its own while this one measures and honours a cancel."""
        with mapped(f"VM '{vm}'"):
            images = self._images(dom)
            memory = max(int(dom.info()[2]) * 1024, 1)  # current memory (KiB) in bytes: the most it writes
        before = self._allocated(images)
        outcome: dict[str, Any] = {}

        def take() -> None:
            try:
                outcome["snap"] = self._create_xml(dom, xml)
            except libvirt.libvirtError as e:
                outcome["error"] = e

        worker = threading.Thread(target=take, name=f"snapshot-{vm}", daemon=True)
        worker.start()
        aborted = False
        while True:
            worker.join(POLL_SECONDS)
            written = max(self._allocated(images) - before, 0)
            if not worker.is_alive():
                break
            task.progress(min(written / memory, 0.99),
                          f"saved {written / _MIB:.0f} MiB of memory (at most {memory / _MIB:.0f} MiB)")
            if task.cancel_requested and not aborted:
                aborted = True
                try:
                    dom.abortJob()
                except libvirt.libvirtError as e:  # internal snapshots: "no job is active"
                    _log.info("snapshots: %s of %s cannot be aborted (%s); it is deleted when it ends",
                              name, vm, e.get_error_message())
        error = outcome.get("error")
        if error is not None:
            self._discard(dom, vm, name)
            if task.cancel_requested:
                raise Cancelled(f"snapshot '{name}' of VM '{vm}' was cancelled", hint="nothing of it was kept")
            raise translate(error, f"snapshot '{name}' of VM '{vm}'") from error
        if task.cancel_requested:
            self._discard(dom, vm, name)
            raise Cancelled(f"snapshot '{name}' of VM '{vm}' was cancelled",
                            hint="libvirt cannot stop an internal snapshot half-way: it ended and was deleted")
        task.progress(1.0, f"saved {written / _MIB:.0f} MiB of memory")
        return outcome["snap"]

    def revert(self, vm: str, name: str) -> dict[str, Any]:
        dom = self.vms._dom(vm)
        self.vms._not_busy(vm)
        snap = self._snap(dom, vm, name)
        with mapped(f"snapshot '{name}' of VM '{vm}'"):
            dom.revertToSnapshot(snap, 0)
        _log.info("snapshots: %s reverted to %s", vm, name)
        state = STATES.get(dom.state()[0], "unknown")
        return {"vm": vm, "snapshot": name, "reverted": True, "state": state}

    def delete(self, vm: str, name: str) -> dict[str, Any]:
        dom = self.vms._dom(vm)
        self.vms._not_busy(vm)
        snap = self._snap(dom, vm, name)
        with mapped(f"snapshot '{name}' of VM '{vm}'"):
            snap.delete(0)
        _log.info("snapshots: deleted %s of %s", name, vm)
        return {"vm": vm, "snapshot": name, "deleted": True}
