"""VM snapshots (libvirt internal snapshots: qcow2 disks, and the memory of a running VM).

``parse_snapshot_request(body)`` validates ``POST /v1/vms/{name}/snapshots``: ``name`` (the VM
name alphabet), optional ``description`` and ``memory``. ``memory`` defaults to whether the VM is
running; asking for memory of a shut-off VM is a 409. A running VM snapshotted without memory is
asked of libvirt as such (``<memory snapshot='no'/>``) and whatever libvirt really did is reported
(``memory`` in the answer is read back from the snapshot).

``SnapshotService`` lists snapshots as a tree (``{"current", "snapshots": [{..., "children": [...]}]}``),
creates, reverts (the VM's disks — and, for a snapshot with memory, its memory and power state —
return to the snapshot's) and deletes (children then hang from the deleted one's parent).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import libvirt

from qx_common import log
from qx_node.errors import Conflict, NotFound
from qx_node.libvirt_conn import STATES, mapped
from qx_node.vmedit import MAX_DESCRIPTION, valid_description
from qx_node.vmspec import NAME_RE, _bool, _obj, _str, valid_vm_name

_log = log.get("node.snapshots")


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

    def create(self, vm: str, req: SnapshotRequest) -> dict[str, Any]:
        dom = self.vms._dom(vm)
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
        root = ET.Element("domainsnapshot")
        ET.SubElement(root, "name").text = req.name
        if req.description:
            ET.SubElement(root, "description").text = req.description
        ET.SubElement(root, "memory", snapshot="internal" if memory else "no")
        flags = getattr(libvirt, "VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC", 0)
        with mapped(f"snapshot '{req.name}' of VM '{vm}'"):
            try:
                snap = dom.snapshotCreateXML(ET.tostring(root, encoding="unicode"), flags)
            except libvirt.libvirtError as e:
                if flags and e.get_error_code() in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                    snap = dom.snapshotCreateXML(ET.tostring(root, encoding="unicode"), 0)  # test:///: no ATOMIC
                else:
                    raise
            out = self._describe(snap, self._current(dom))
        _log.info("snapshots: %s of %s (memory %s)", req.name, vm, out["memory"])
        return out

    def revert(self, vm: str, name: str) -> dict[str, Any]:
        dom = self.vms._dom(vm)
        snap = self._snap(dom, vm, name)
        with mapped(f"snapshot '{name}' of VM '{vm}'"):
            dom.revertToSnapshot(snap, 0)
        _log.info("snapshots: %s reverted to %s", vm, name)
        state = STATES.get(dom.state()[0], "unknown")
        return {"vm": vm, "snapshot": name, "reverted": True, "state": state}

    def delete(self, vm: str, name: str) -> dict[str, Any]:
        dom = self.vms._dom(vm)
        snap = self._snap(dom, vm, name)
        with mapped(f"snapshot '{name}' of VM '{vm}'"):
            snap.delete(0)
        _log.info("snapshots: deleted %s of %s", name, vm)
        return {"vm": vm, "snapshot": name, "deleted": True}
