"""Virtual machines: create from a validated spec, list, inspect, power actions, stats, delete.

``VmService`` is the only code that touches libvirt domains. Rules it keeps:

* State preconditions are checked first, so a wrong action is a clear 409 ("VM 'x' is not
  running"), not a driver-specific message; whatever libvirt still refuses is mapped by
  :func:`~qx_node.libvirt_conn.mapped`.
* ``create`` is all-or-nothing: volumes it created and a domain it defined are removed again if a
  later step fails.
* ``delete`` keeps the VM's disks unless ``remove_disks`` is asked, and refuses a running VM
  unless ``force`` (which powers it off first).
* Restart-on-crash: libvirt's ``<on_crash>restart`` covers guest panics; for a QEMU process that
  died (stopped/crashed, stopped/failed) ``on_lifecycle`` starts the VM again, and
  ``sweep_crashed`` does the same on every (re)connect for crashes that happened while qx-node
  or libvirtd was down. Nothing else here ever stops or starts a VM on its own.
"""

from __future__ import annotations

from collections.abc import Callable

import contextlib
import threading
import time
from typing import Any

import libvirt

from qx_common import log
from qx_node import domxml
from qx_node.errors import Conflict, NotFound
from qx_node.libvirt_conn import STATES, Libvirt, mapped
from qx_node.storage import GiB, Storage
from qx_node.vmspec import VmSpec, valid_vm_name

_log = log.get("node.vms")
_RUNNING = {libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_PAUSED,
            libvirt.VIR_DOMAIN_PMSUSPENDED}
_SHUTOFF_CRASHED = getattr(libvirt, "VIR_DOMAIN_SHUTOFF_CRASHED", 3)
_SHUTOFF_FAILED = getattr(libvirt, "VIR_DOMAIN_SHUTOFF_FAILED", 6)


class VmService:
    def __init__(self, lv: Libvirt, storage: Storage, virt_type: str | None = None,
                 kvm_usable: Callable[[], bool] | None = None) -> None:
        self.lv = lv
        self.storage = storage
        self.virt_type = virt_type  # None: the best the host offers (kvm, else qemu, else the first)
        # libvirt lists 'kvm' whenever /dev/kvm exists; under software-nested KVM (no vmx/svm) such
        # guests die at start, so the default follows our own check (telemetry.kvm_status).
        self.kvm_usable = kvm_usable or (lambda: True)
        self._cpu_prev: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self.crash_restarts = 0

    # -- lookup -------------------------------------------------------------------------------
    def _dom(self, name: str) -> libvirt.virDomain:
        valid_vm_name(name)
        try:
            return self.lv.conn().lookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise NotFound(f"VM '{name}' does not exist", hint="GET /v1/vms lists the VMs") from e
            with mapped(f"VM '{name}'"):
                raise

    def _virt_type(self) -> str:
        if self.virt_type:
            return self.virt_type
        with mapped("host capabilities"):
            caps = self.lv.conn().getCapabilities()
        types = [t for t in ("kvm", "qemu") if f"<domain type='{t}'" in caps
                 and (t != "kvm" or self.kvm_usable())]
        if types:
            return types[0]
        import re

        m = re.search(r"<domain type='(\w+)'", caps)
        return m.group(1) if m else "kvm"

    @staticmethod
    def _running(dom: libvirt.virDomain) -> bool:
        return dom.state()[0] in _RUNNING

    def summary(self, dom: libvirt.virDomain) -> dict[str, Any]:
        with mapped(f"VM '{dom.name()}'"):
            state, max_kib, _mem, vcpus, _cpu = dom.info()
            return {"name": dom.name(), "uuid": dom.UUIDString(), "state": STATES.get(state, "unknown"),
                    "vcpus": vcpus, "memory_mib": max_kib // 1024, "autostart": bool(dom.autostart()),
                    "persistent": bool(dom.isPersistent())}

    def list(self) -> list[dict[str, Any]]:
        with mapped("VM list"):
            doms = self.lv.conn().listAllDomains(0)
        out = []
        for d in doms:
            with contextlib.suppress(NotFound):  # vanished between list and info
                out.append(self.summary(d))
        return sorted(out, key=lambda v: v["name"])

    def get(self, name: str) -> dict[str, Any]:
        dom = self._dom(name)
        info = self.summary(dom)
        with mapped(f"VM '{name}'"):
            x = domxml.read_domain_xml(dom.XMLDesc(0))
        info.update(restart_on_crash=x.restart_on_crash, firmware=x.firmware, disks=list(x.disks),
                    cdroms=list(x.cdroms), nics=list(x.nics), console=self._console(x, info["state"]))
        return info

    @staticmethod
    def _console(x: domxml.DomainInfo, state: str) -> dict[str, Any] | None:
        if x.vnc is None or state not in ("running", "paused", "blocked"):
            return None
        host, port = x.vnc
        return {"type": "vnc", "host": host, "port": port}

    # -- create / delete ----------------------------------------------------------------------
    def create(self, spec: VmSpec) -> dict[str, Any]:
        conn = self.lv.conn()
        try:
            conn.lookupByName(spec.name)
        except libvirt.libvirtError:
            pass
        else:
            raise Conflict(f"name: VM '{spec.name}' already exists", field="name", hint="choose another name")
        # Resolve what must exist before creating anything.
        existing = {i: self.storage.path_of(d.volume, f"disks[{i}].volume")
                    for i, d in enumerate(spec.disks) if d.volume}
        cdrom = self.storage.path_of(spec.cdrom, "cdrom") if spec.cdrom else None
        kernel = self.storage.path_of(spec.kernel, "kernel") if spec.kernel else None
        initrd = self.storage.path_of(spec.initrd, "initrd") if spec.initrd else None
        virt_type = self._virt_type()
        created: list[str] = []
        dom = None
        try:
            paths = []
            for i, d in enumerate(spec.disks):
                if d.volume:
                    paths.append(existing[i])
                    continue
                assert d.size_gib is not None
                vol = self.storage.create(f"{spec.name}-disk{i}.qcow2", d.size_gib * GiB, "qcow2",
                                          field=f"disks[{i}]")
                created.append(vol.name)
                paths.append(vol.path)
            xml = domxml.build_domain_xml(spec, domxml.Paths(tuple(paths), cdrom, kernel, initrd), virt_type)
            with mapped(f"VM '{spec.name}'"):
                dom = conn.defineXML(xml)
                if spec.autostart:
                    dom.setAutostart(1)
                if spec.start:
                    dom.create()
        except BaseException:
            if dom is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            for v in created:
                with contextlib.suppress(Exception):
                    self.storage.delete(v)
            raise
        _log.info("vms: created %s (%s)", spec.name, virt_type)
        return self.get(spec.name)

    def delete(self, name: str, *, remove_disks: bool = False, force: bool = False) -> dict[str, Any]:
        dom = self._dom(name)
        with mapped(f"VM '{name}'"):
            if self._running(dom):
                if not force:
                    raise Conflict(f"VM '{name}' is running", hint="stop it first, or pass force=true")
                dom.destroy()
            disks = domxml.read_domain_xml(dom.XMLDesc(0)).disks
            try:
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                                  | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
            except libvirt.libvirtError:
                dom.undefine()  # drivers without those flags (test:///)
        removed = []
        if remove_disks:
            for path in disks:
                vol_name = path.rsplit("/", 1)[-1]
                if path.rsplit("/", 1)[0] != str(self.storage.pool_dir):
                    continue  # never delete a file we do not own
                with contextlib.suppress(NotFound):
                    self.storage.delete(vol_name, in_use_by=self.users_of(path))
                    removed.append(vol_name)
        _log.info("vms: deleted %s (disks %s)", name, "removed" if remove_disks else "kept")
        self._cpu_prev.pop(name, None)
        return {"name": name, "deleted": True, "removed_volumes": removed}

    def users_of(self, path: str) -> list[str]:
        """Names of the defined VMs whose disks include ``path``."""
        users = []
        with mapped("VM list"):
            for d in self.lv.conn().listAllDomains(0):
                with contextlib.suppress(libvirt.libvirtError):
                    x = domxml.read_domain_xml(d.XMLDesc(0))
                    if path in x.disks or path in x.cdroms:
                        users.append(d.name())
        return users

    # -- power --------------------------------------------------------------------------------
    def action(self, name: str, action: str) -> dict[str, Any]:
        dom = self._dom(name)
        with mapped(f"VM '{name}'"):
            running = self._running(dom)
            if action == "start":
                if running:
                    raise Conflict(f"VM '{name}' is already running")
                dom.create()
            else:
                if not running:
                    raise Conflict(f"VM '{name}' is not running", hint="start it first")
                if action == "shutdown":
                    dom.shutdown()  # ACPI power button: the guest decides
                elif action == "stop":
                    dom.destroy()  # pull the plug
                elif action == "reboot":
                    dom.reboot(0)
                else:
                    raise NotFound(f"action '{action}' does not exist")
        return self.summary(dom)

    # -- stats --------------------------------------------------------------------------------
    def stats(self, name: str) -> dict[str, Any]:
        dom = self._dom(name)
        with mapped(f"VM '{name}'"):
            state, max_kib, mem_kib, vcpus, cpu_ns = dom.info()
            x = domxml.read_domain_xml(dom.XMLDesc(0))
        now = time.monotonic()
        out: dict[str, Any] = {"name": name, "state": STATES.get(state, "unknown"), "vcpus": vcpus,
                               "cpu_time_ns": cpu_ns, "memory_max_bytes": max_kib * 1024,
                               "memory_bytes": mem_kib * 1024}
        with self._lock:
            prev = self._cpu_prev.get(name)
            self._cpu_prev[name] = (now, cpu_ns)
        # CPU% since the previous stats call (100% = one vCPU busy); null on the first call.
        out["cpu_percent"] = (round(100.0 * (cpu_ns - prev[1]) / ((now - prev[0]) * 1e9), 2)
                              if prev and now > prev[0] and cpu_ns >= prev[1] else None)
        if state not in _RUNNING:
            out.update(disks=[], interfaces=[], memory={})
            return out
        mem: dict[str, int] = {}
        with contextlib.suppress(libvirt.libvirtError):
            mem = {k: int(v) * 1024 for k, v in dom.memoryStats().items() if k != "last_update"}
        disks = []
        for path in x.disks:
            with contextlib.suppress(libvirt.libvirtError):
                rd_req, rd_bytes, wr_req, wr_bytes, _err = dom.blockStats(path)
                disks.append({"path": path, "read_bytes": rd_bytes, "write_bytes": wr_bytes,
                              "read_requests": rd_req, "write_requests": wr_req})
        ifaces = []
        for dev in x.interfaces:
            with contextlib.suppress(libvirt.libvirtError):
                s = dom.interfaceStats(dev)
                ifaces.append({"device": dev, "rx_bytes": s[0], "rx_packets": s[1], "tx_bytes": s[4],
                               "tx_packets": s[5]})
        out.update(memory=mem, disks=disks, interfaces=ifaces)
        return out

    # -- restart on crash ---------------------------------------------------------------------
    def on_lifecycle(self, _conn: libvirt.virConnect, dom: libvirt.virDomain, event: str, detail: str) -> None:
        if not (event == "stopped" and detail in ("crashed", "failed")):
            return
        name = dom.name()
        # Not on libvirt's event thread: starting a domain is a blocking RPC.
        threading.Thread(target=self._restart_crashed, args=(name,), name=f"restart-{name}", daemon=True).start()

    def _restart_crashed(self, name: str) -> None:
        try:
            dom = self.lv.conn().lookupByName(name)
            xml = dom.XMLDesc(0)
            if not domxml.read_domain_xml(xml).restart_on_crash or self._running(dom):
                return
            _log.warning("vms: %s crashed; restarting it (restart-on-crash)", name)
            dom.create()
            self.crash_restarts += 1
            self.lv.bus.publish({"type": "restart-on-crash", "vm": name})
        except Exception as e:  # noqa: BLE001 - reported, never raised on a background thread
            _log.error("vms: restart-on-crash of %s failed: %s", name, e)

    def sweep_crashed(self, conn: libvirt.virConnect) -> None:
        """On (re)connect: restart restart-on-crash VMs that crashed while we were not listening."""
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE):
            with contextlib.suppress(libvirt.libvirtError):
                state, reason = dom.state()
                if state in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED) and (
                        state == libvirt.VIR_DOMAIN_CRASHED or reason in (_SHUTOFF_CRASHED, _SHUTOFF_FAILED)):
                    threading.Thread(target=self._restart_crashed, args=(dom.name(),), daemon=True).start()
