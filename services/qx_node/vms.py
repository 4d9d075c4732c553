"""Virtual machines: create from a validated spec, list, inspect, power actions, stats, delete.

``VmService`` is the only code that touches libvirt domains. Rules it keeps:

* State preconditions are checked first, so a wrong action is a clear 409 ("VM 'x' is not
  running"), not a driver-specific message; whatever libvirt still refuses is mapped by
  :func:`~qx_node.libvirt_conn.mapped`.
* ``create`` is all-or-nothing: volumes it created and a domain it defined are removed again if a
  later step fails.
* ``delete`` keeps the VM's disks unless ``remove_disks`` is asked, and refuses a running VM
  unless ``force`` (which powers it off first). Every check (state, each disk to remove not used
  by another VM) comes before the first change: a refused delete leaves the VM and all its disks.
* One writer per volume: a volume attached as a disk is used by no other VM (and not twice by one)
  unless every VM declares that disk ``shared``; cdrom, kernel and initrd volumes are read-only
  and may be shared, but not with a disk. ``users_of`` covers all four uses, so a volume a VM
  boots from cannot be deleted. Checks and changes that attach or free volumes run under one
  lock, so two requests cannot both pass the check.
* Restart-on-crash: libvirt's ``<on_crash>restart`` covers guest panics; for a QEMU process that
  died (stopped/crashed, stopped/failed) ``on_lifecycle`` starts the VM again, and
  ``sweep_crashed`` does the same on every (re)connect for crashes that happened while qx-node
  or libvirtd was down. Nothing else here ever stops or starts a VM on its own.
* Admission (:mod:`qx_node.hostops`): every path that starts a VM (start, create/clone with
  start, restart-on-crash) goes through :meth:`VmService._admit` — refused in maintenance mode, or
  when the memory does not fit — and new disks through :meth:`VmService.check_disk_space`. A VM
  being cloned (source or target) is ``busy``: it cannot be started, edited or deleted meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import libvirt

from qx_common import log
from qx_node import domxml, hostops
from qx_node.errors import ApiError, BackendError, Conflict, InvalidField, NotFound
from qx_node.hostops import HostConfig
from qx_node.libvirt_conn import STATES, Libvirt, mapped
from qx_node.storage import GiB, Storage, Volume
from qx_node.tasks import Task, Tasks
from qx_node.vmedit import VmEdit
from qx_node.vmspec import VmSpec, valid_vm_name

_log = log.get("node.vms")
_RUNNING = {libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_PAUSED,
            libvirt.VIR_DOMAIN_PMSUSPENDED}
_SHUTOFF_CRASHED = getattr(libvirt, "VIR_DOMAIN_SHUTOFF_CRASHED", 3)
_SHUTOFF_FAILED = getattr(libvirt, "VIR_DOMAIN_SHUTOFF_FAILED", 6)


@dataclass(frozen=True)
class Use:
    """One VM's use of a file: as a ``disk`` (written), ``cdrom``, ``kernel`` or ``initrd`` (read)."""

    vm: str
    role: str
    shared: bool = False


@dataclass(frozen=True)
class _CreatePlan:
    """What the checks of a create resolved: existing volumes by disk index, media paths."""

    existing: dict[int, Volume]
    cdrom: str | None
    kernel: str | None
    initrd: str | None


def _disk_volume(vm: str, index: int) -> str:
    """The name of the volume a create makes for the VM's new disk ``index``."""
    return f"{vm}-disk{index}.qcow2"


def _uses(name: str, dom: libvirt.virDomain) -> Iterator[tuple[str, Use]]:
    """(real path, use) of every file in the VM's live and next-boot configuration."""
    xmls = [dom.XMLDesc(0)]
    if dom.isActive() and dom.isPersistent():
        xmls.append(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    for xml in xmls:
        x = domxml.read_domain_xml(xml)
        for p in x.disks:
            yield os.path.realpath(p), Use(name, "disk", p in x.shareable)
        for p in x.cdroms:
            yield os.path.realpath(p), Use(name, "cdrom")
        if x.kernel:
            yield os.path.realpath(x.kernel), Use(name, "kernel")
        if x.initrd:
            yield os.path.realpath(x.initrd), Use(name, "initrd")


def _undefine(dom: libvirt.virDomain) -> None:
    """Undefine with its NVRAM, managed save and snapshot metadata; drivers that lack some of these
    flags (test:///) get the ones they know."""
    flags = [libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
             | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA, libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA, 0]
    for i, f in enumerate(flags):
        try:
            dom.undefineFlags(f)
            return
        except libvirt.libvirtError as e:
            if i == len(flags) - 1 or e.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG,
                                                                   libvirt.VIR_ERR_NO_SUPPORT):
                raise


class VmService:
    def __init__(self, lv: Libvirt, storage: Storage, virt_type: str | None = None,
                 kvm_usable: Callable[[], bool] | None = None, config: HostConfig | None = None) -> None:
        self.lv = lv
        self.storage = storage
        self.config = config  # None: no admission control (unit use without a host)
        self.busy: dict[str, str] = {}  # VM name -> why it must not be touched (a clone in progress)
        self.reserved: set[str] = set()  # volumes a clone is writing (not deletable meanwhile)
        self.virt_type = virt_type  # None: the best the host offers (kvm, else qemu, else the first)
        # libvirt lists 'kvm' whenever /dev/kvm exists; under software-nested KVM (no vmx/svm) such
        # guests die at start, so the default follows our own check (telemetry.kvm_status).
        self.kvm_usable = kvm_usable or (lambda: True)
        self._cpu_prev: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()
        # Held from the checks to the change by every operation that attaches or frees volumes.
        self._mutate = threading.RLock()
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

    # -- admission ------------------------------------------------------------------------------
    def memory_use(self) -> dict[str, int]:
        """Host memory and what running VMs are given (MiB), from libvirt."""
        conn = self.lv.conn()
        with mapped("host memory"):
            total = int(conn.getInfo()[1])
            doms = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        committed = 0
        for d in doms:
            with contextlib.suppress(libvirt.libvirtError):
                committed += int(d.info()[2]) // 1024
        return {"total_mib": total, "committed_mib": committed}

    def _admit(self, name: str, memory_mib: int, field: str = "memory_mib") -> None:
        """May VM ``name`` (needing ``memory_mib``) start now? 409 when not."""
        if name in self.busy:
            raise Conflict(f"VM '{name}' is {self.busy[name]}", hint="wait for its task to end (GET /v1/tasks)")
        if self.config is None:
            return
        s = self.config.current
        if s.maintenance:
            raise Conflict(f"the host is in maintenance mode: VM '{name}' cannot start",
                           hint='leave it first: POST /v1/host/maintenance {"enabled": false}')
        use = self.memory_use()
        hostops.memory_fit(use["total_mib"], use["committed_mib"], memory_mib, s, field)

    def check_disk_space(self, needed_bytes: int, field: str) -> None:
        if self.config is None or needed_bytes <= 0:
            return
        hostops.disk_fit(int(self.storage.pool_info()["available"]), needed_bytes, self.config.current, field)

    def _not_busy(self, name: str) -> None:
        if name in self.busy:
            raise Conflict(f"VM '{name}' is {self.busy[name]}", hint="wait for its task to end (GET /v1/tasks)")

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
            cfg = x
            if dom.isActive() and dom.isPersistent():
                cfg = domxml.read_domain_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        # A disk the running VM still has but its saved definition no longer does goes at its next start.
        saved = {d["dev"] for d in cfg.disk_devices}
        disk_devices = [{**d, "removed_at_next_start": d["dev"] not in saved} for d in x.disk_devices]
        info.update(restart_on_crash=x.restart_on_crash, firmware=x.firmware, disks=list(x.disks),
                    disk_devices=disk_devices, cdroms=list(x.cdroms), nics=list(x.nics),
                    console=self._console(x, info["state"]),
                    description=cfg.description, tags=list(cfg.tags))
        # Changes saved for the next start that the running VM does not have yet.
        pending: dict[str, int] = {}
        if cfg.vcpus is not None and cfg.vcpus != info["vcpus"]:
            pending["vcpus"] = cfg.vcpus
        if cfg.memory_kib is not None and cfg.memory_kib // 1024 != info["memory_mib"]:
            pending["memory_mib"] = cfg.memory_kib // 1024
        info["pending"] = pending
        info["busy"] = self.busy.get(name)  # e.g. "being cloned to 'x'": a task holds it
        return info

    @staticmethod
    def _console(x: domxml.DomainInfo, state: str) -> dict[str, Any] | None:
        if x.vnc is None or state not in ("running", "paused", "blocked"):
            return None
        host, port = x.vnc
        return {"type": "vnc", "host": host, "port": port}

    # -- attachments ----------------------------------------------------------------------------
    def attachments(self, exclude: str | None = None) -> dict[str, list[Use]]:
        """Every use of a file by a defined VM (live and next-boot configuration), by real path;
        ``exclude``: the UUID of a VM to leave out."""
        with mapped("VM list"):
            doms = self.lv.conn().listAllDomains(0)
        out: dict[str, list[Use]] = {}
        for d in doms:
            with contextlib.suppress(libvirt.libvirtError):
                if exclude is not None and d.UUIDString() == exclude:
                    continue
                name = d.name()
                for use_path, use in _uses(name, d):
                    out.setdefault(use_path, [])
                    if use not in out[use_path]:
                        out[use_path].append(use)
        return out

    def users_of(self, path: str) -> list[str]:
        """Names of the defined VMs that use ``path`` as a disk, cdrom, kernel or initrd."""
        return sorted({u.vm for u in self.attachments().get(os.path.realpath(path), [])})

    def delete_volume(self, name: str) -> None:
        """Delete a pool volume unless a VM uses it (disk, cdrom, kernel or initrd)."""
        with self._mutate:
            vol = self.storage.get(name)
            if name in self.reserved:
                raise Conflict(f"volume '{name}' is being written by a clone", hint="wait for its task to end (GET /v1/tasks)")
            self.storage.delete(name, in_use_by=self.users_of(vol.path))

    def _check_free(self, wanted: list[tuple[str, str, str, bool]], exclude: str | None = None) -> None:
        """``wanted``: (field, path, role, shared) of the volumes a VM is about to use. A disk is written
        to: nobody else may use its volume unless every VM declares the disk shared. Read-only uses
        (cdrom, kernel, initrd) may be shared freely, but not with a disk."""
        if not wanted:
            return
        uses = self.attachments(exclude)
        for field, path, role, shared in wanted:
            others = uses.get(os.path.realpath(path), [])
            if not others:
                continue
            vol = os.path.basename(path)
            names = ", ".join(sorted({u.vm for u in others}))
            if role == "disk":
                if shared and all(u.role == "disk" and u.shared for u in others):
                    continue
                raise Conflict(f"{field}: volume '{vol}' is already used by VM(s) {names}", field=field,
                               hint="a disk belongs to one VM; to share a raw volume, declare \"shared\": true "
                                    "on the disk of every VM that attaches it")
            if any(u.role == "disk" for u in others):
                raise Conflict(f"{field}: volume '{vol}' is a disk of VM(s) {names}", field=field,
                               hint="a volume written to as a disk cannot also be read as media")

    # -- create / delete ----------------------------------------------------------------------
    def create(self, spec: VmSpec, task: Task | None = None) -> dict[str, Any]:
        """``task``: report progress per disk and stop (undoing everything) when it is cancelled."""
        with self._mutate:  # checks and definition are one step against other creates and deletes
            return self._create(spec, task)

    def create_task(self, spec: VmSpec, tasks: Tasks) -> Task:
        """Create as a task (the route's default): every check now, so a refusal is a 4xx before
        any task exists; the name is then held ``busy`` ("being created") until the task takes it
        (a second create of the name is refused at once). The task checks again under the lock and
        creates: what changed in between (another client took the volume) fails the task."""
        with self._mutate:
            self._check_create(spec)
            self.busy[spec.name] = "being created"

        def release() -> None:
            with self._mutate:
                if self.busy.get(spec.name) == "being created":
                    del self.busy[spec.name]

        def work(task: Task) -> dict[str, Any]:
            with self._mutate:
                release()
                return self._create(spec, task)

        try:
            return tasks.start("create", spec.name, work, cancellable=True)
        except BaseException:  # no task (too many running): the name must not stay held
            release()
            raise

    def _check_create(self, spec: VmSpec) -> _CreatePlan:
        """Every check of a create, in order, before anything is changed (``_mutate`` held)."""
        conn = self.lv.conn()
        try:
            conn.lookupByName(spec.name)
        except libvirt.libvirtError:
            pass
        else:
            raise Conflict(f"name: VM '{spec.name}' already exists", field="name", hint="choose another name")
        if spec.name in self.busy:
            raise Conflict(f"name: VM '{spec.name}' is {self.busy[spec.name]}", field="name", hint="choose another name")
        if spec.start:
            self._admit(spec.name, spec.memory_mib)
        self.check_disk_space(sum((d.size_gib or 0) * GiB for d in spec.disks if not d.volume), "disks")
        for i, d in enumerate(spec.disks):  # the new disks' volume names must be free (libvirt's view)
            if not d.volume and self.storage.exists(_disk_volume(spec.name, i)):
                raise Conflict(f"disks[{i}]: volume '{_disk_volume(spec.name, i)}' already exists", field=f"disks[{i}]",
                               hint="delete that volume first, or attach it as an existing one (\"volume\")")
        # Resolve what must exist, and check it is free to use, before creating anything.
        existing = {i: self.storage.resolve(d.volume, f"disks[{i}].volume")
                    for i, d in enumerate(spec.disks) if d.volume}
        for i, vol in existing.items():
            if spec.disks[i].shared and vol.format != "raw":
                raise InvalidField(f"disks[{i}].shared: volume '{vol.name}' is {vol.format}; only raw volumes "
                                   "can be shared", field=f"disks[{i}].shared",
                                   hint="create the shared volume with format raw")
        cdrom = self.storage.path_of(spec.cdrom, "cdrom") if spec.cdrom else None
        kernel = self.storage.path_of(spec.kernel, "kernel") if spec.kernel else None
        initrd = self.storage.path_of(spec.initrd, "initrd") if spec.initrd else None
        wanted = [(f"disks[{i}].volume", v.path, "disk", spec.disks[i].shared) for i, v in existing.items()]
        wanted += [(f, p, f, False) for f, p in (("cdrom", cdrom), ("kernel", kernel), ("initrd", initrd)) if p]
        self._check_free(wanted)
        for i, nic in enumerate(spec.nics):
            if nic.network:
                try:
                    conn.networkLookupByName(nic.network)
                except libvirt.libvirtError as e:
                    raise NotFound(f"nics[{i}].network: network '{nic.network}' does not exist",
                                   field=f"nics[{i}].network", hint="GET /v1/networks lists them") from e
        return _CreatePlan(existing, cdrom, kernel, initrd)

    def _create(self, spec: VmSpec, task: Task | None) -> dict[str, Any]:
        plan = self._check_create(spec)
        existing, cdrom, kernel, initrd = plan.existing, plan.cdrom, plan.kernel, plan.initrd
        conn = self.lv.conn()
        virt_type = self._virt_type()
        created: list[str] = []
        dom = None
        try:
            paths = []
            for i, d in enumerate(spec.disks):
                if d.volume:
                    paths.append(existing[i].path)
                    continue
                assert d.size_gib is not None
                if task is not None:
                    task.check()
                    task.progress(i / (len(spec.disks) + 1), f"creating disk {i}")
                vol = self.storage.create(_disk_volume(spec.name, i), d.size_gib * GiB, "qcow2",
                                          field=f"disks[{i}]")
                created.append(vol.name)
                paths.append(vol.path)
            if task is not None:
                task.check()
                task.progress(len(spec.disks) / (len(spec.disks) + 1), "defining the VM")
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
                    _undefine(dom)
            for v in created:
                with contextlib.suppress(Exception):
                    self.storage.delete(v)
            raise
        _log.info("vms: created %s (%s)", spec.name, virt_type)
        return self.get(spec.name)

    def delete(self, name: str, *, remove_disks: bool = False, force: bool = False) -> dict[str, Any]:
        """All checks first (state, every disk to remove): a refused delete changes nothing."""
        with self._mutate:
            return self._delete(name, remove_disks, force)

    def _delete(self, name: str, remove_disks: bool, force: bool) -> dict[str, Any]:
        dom = self._dom(name)
        self._not_busy(name)
        with mapped(f"VM '{name}'"):
            running = self._running(dom)
            if running and not force:
                raise Conflict(f"VM '{name}' is running", hint="stop it first, or pass force=true")
            disks = list(dict.fromkeys(path for path, u in _uses(name, dom) if u.role == "disk"))
        to_remove: list[str] = []
        kept: list[str] = []
        if remove_disks:
            with mapped(f"VM '{name}'"):
                uses = self.attachments(exclude=dom.UUIDString())
            pool = os.path.realpath(self.storage.pool_dir)
            for real in disks:
                if os.path.dirname(real) != pool:
                    kept.append(real)  # never delete a file the pool does not own
                    continue
                others = uses.get(real, [])
                if others:
                    raise Conflict(f"VM '{name}': its disk '{os.path.basename(real)}' is also used by VM(s) "
                                   f"{', '.join(sorted({u.vm for u in others}))}; nothing was deleted",
                                   field="remove_disks",
                                   hint="detach the disk from the other VM(s) first, or delete with remove_disks=false")
                to_remove.append(os.path.basename(real))
        with mapped(f"VM '{name}'"):
            if running:
                dom.destroy()
            _undefine(dom)
        self._cpu_prev.pop(name, None)
        removed, failed = [], []
        for vol_name in to_remove:
            try:
                self.storage.delete(vol_name)
                removed.append(vol_name)
            except NotFound:
                pass  # already gone
            except ApiError as e:
                failed.append(f"{vol_name} ({e.message})")
        _log.info("vms: deleted %s (disks %s)", name, "removed" if remove_disks else "kept")
        if failed:
            raise BackendError(f"VM '{name}' was deleted, but not its volume(s) {'; '.join(failed)}",
                               hint="delete them with DELETE /v1/storage/volumes/{name}")
        return {"name": name, "deleted": True, "removed_volumes": removed, "kept_outside_pool": kept}

    # -- power --------------------------------------------------------------------------------
    def action(self, name: str, action: str) -> dict[str, Any]:
        dom = self._dom(name)
        # A VM a task holds is not powered on, off or paused under it: a snapshot whose VM is destroyed
        # half-way was seen reported as taken by libvirt, or the connection reset (libvirt 11.3).
        self._not_busy(name)
        with mapped(f"VM '{name}'"):
            running = self._running(dom)
            paused = dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
            if action == "start":
                if running:
                    raise Conflict(f"VM '{name}' is already running" + (" (paused)" if paused else ""),
                                   hint="POST .../resume continues a paused VM" if paused else None)
                # One admission at a time, held until QEMU has the memory: two starts that each fit
                # alone but not together cannot both pass the check.
                with self._mutate:
                    self._admit(name, int(dom.info()[2]) // 1024)  # the memory it is given at start
                    dom.create()
            elif action == "pause":
                if not running:
                    raise Conflict(f"VM '{name}' is not running", hint="start it first")
                if paused:
                    raise Conflict(f"VM '{name}' is already paused")
                dom.suspend()
            elif action == "resume":
                if not paused:
                    raise Conflict(f"VM '{name}' is not paused (state {STATES.get(dom.state()[0], 'unknown')})")
                dom.resume()
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

    # -- edit ---------------------------------------------------------------------------------
    def edit(self, name: str, e: VmEdit) -> dict[str, Any]:
        """Apply an edit. Everything is checked first (a rename needs the VM shut off and the name
        free); then description, tags, autostart, vCPUs, memory and last the name are applied.
        ``applied`` says, per field, "now" (in effect, and kept) or "next_start" (saved; the running
        VM cannot take it live: more vCPUs or memory than it started with, or a hot-unplug QEMU
        refused)."""
        with self._mutate:
            dom = self._dom(name)
            self._not_busy(name)
            what = f"VM '{name}'"
            with mapped(what):
                active = bool(dom.isActive())
                if not dom.isPersistent():
                    raise Conflict(f"{what} is transient (not defined in libvirt) and cannot be edited")
                cfg = domxml.read_domain_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            rename = e.name is not None and e.name != name
            if rename:
                if active:
                    raise Conflict(f"name: {what} must be shut off to be renamed", field="name",
                                   hint="shut it down or stop it first")
                assert e.name is not None
                with mapped(what):
                    if dom.snapshotNum(0):
                        raise Conflict(f"name: {what} has snapshots; libvirt cannot rename such a VM", field="name",
                                       hint="delete its snapshots first (GET .../snapshots lists them)")
                try:
                    self.lv.conn().lookupByName(e.name)
                except libvirt.libvirtError:
                    pass
                else:
                    raise Conflict(f"name: VM '{e.name}' already exists", field="name", hint="choose another name")
            applied: dict[str, str] = {}
            live_cfg = [libvirt.VIR_DOMAIN_AFFECT_CONFIG] + ([libvirt.VIR_DOMAIN_AFFECT_LIVE] if active else [])
            with mapped(what):
                if e.description is not None:
                    for f in live_cfg:
                        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_DESCRIPTION, e.description or None, None, None, f)
                    applied["description"] = "now"
                if e.tags is not None:
                    meta = domxml.qx_metadata(cfg.restart_on_crash, cfg.firmware, e.tags)
                    for f in live_cfg:
                        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, meta, "qx", domxml.QX_NS, f)
                    applied["tags"] = "now"
                if e.autostart is not None:
                    dom.setAutostart(int(e.autostart))
                    applied["autostart"] = "now"
                if e.vcpus is not None:
                    applied["vcpus"] = self._set_vcpus(dom, e.vcpus, cfg.vcpus or 1, active)
                if e.memory_mib is not None:
                    applied["memory_mib"] = self._set_memory(dom, e.memory_mib * 1024, cfg.memory_kib or 0, active)
                if rename:
                    assert e.name is not None
                    dom.rename(e.name, 0)
                    applied["name"] = "now"
                    self._cpu_prev.pop(name, None)
        new_name = e.name if rename and e.name else name
        _log.info("vms: edited %s (%s)", new_name, ", ".join(f"{k} {v}" for k, v in applied.items()))
        return {**self.get(new_name), "applied": applied}

    @staticmethod
    def _set_vcpus(dom: libvirt.virDomain, n: int, cfg_max: int, active: bool) -> str:
        cfg, maximum = libvirt.VIR_DOMAIN_AFFECT_CONFIG, libvirt.VIR_DOMAIN_VCPU_MAXIMUM
        if n > cfg_max:  # the maximum first: the count may never exceed it
            dom.setVcpusFlags(n, cfg | maximum)
            dom.setVcpusFlags(n, cfg)
        else:
            dom.setVcpusFlags(n, cfg)
            dom.setVcpusFlags(n, cfg | maximum)
        if not active:
            return "now"
        try:
            if dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) != n:
                dom.setVcpusFlags(n, libvirt.VIR_DOMAIN_AFFECT_LIVE)  # hot(un)plug within the boot-time maximum
        except libvirt.libvirtError as e:
            _log.info("vms: vCPUs of %s not changed live (%s): at the next start", dom.name(), e.get_error_message())
            return "next_start"
        return "now"

    @staticmethod
    def _set_memory(dom: libvirt.virDomain, kib: int, cfg_max_kib: int, active: bool) -> str:
        cfg, maximum = libvirt.VIR_DOMAIN_AFFECT_CONFIG, libvirt.VIR_DOMAIN_MEM_MAXIMUM
        if kib > cfg_max_kib:
            dom.setMemoryFlags(kib, cfg | maximum)
            dom.setMemoryFlags(kib, cfg)
        else:
            dom.setMemoryFlags(kib, cfg)
            dom.setMemoryFlags(kib, cfg | maximum)
        if not active:
            return "now"
        if kib > dom.info()[1]:
            return "next_start"  # above the memory the VM started with: no hotplug
        try:
            dom.setMemoryFlags(kib, libvirt.VIR_DOMAIN_AFFECT_LIVE)  # the balloon
        except libvirt.libvirtError as e:
            _log.info("vms: memory of %s not changed live (%s): at the next start", dom.name(), e.get_error_message())
            return "next_start"
        return "now"

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
            if self.config is not None and self.config.current.maintenance:
                _log.warning("vms: %s crashed; not restarted (the host is in maintenance mode)", name)
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
