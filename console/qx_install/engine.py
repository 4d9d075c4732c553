"""Plan and execute an installation of Quantix OS onto one disk.

Three modes (:data:`MODES`):

* ``wipe`` — a new GPT from the image's own partition definitions (systemd-repart, the same files
  ``make image`` uses), the ESP and the data partition made and filled by repart from a staged tree
  (boot loader + UKI; the factory ``/var`` + this host's configuration), slot A written from the root
  payload and read back, sealed (below), then the boot entry.
* ``keep-data`` — the existing partitions kept; slot A rewritten and sealed, slot B's entry removed, the
  ESP's Quantix files replaced; the data partition (VMs, logs, and — unless ``keep_config`` is false — the
  host configuration) untouched. A disk installed before dm-verity (no ``root-*-verity`` partitions) gets
  the payload's layout first: the slots' region is laid out again, the ESP and the data partition keep
  their entries and bytes (:mod:`qx_install.layout`).
* ``upgrade`` — the inactive slot written and switched to with boot counting through
  :func:`qx_update.slotinstall.write_and_switch`, exactly as ``qx-update apply`` does: if the new slot
  does not prove itself healthy, systemd-boot returns to the old one.

Sealing (a release with dm-verity: its UKI's own command line names ``roothash=``, :meth:`Payload.roothash`):
after slot A is written and read back, :func:`qx_update.seal.seal` builds its hash tree, refuses it unless
its root hash is the UKI's, writes it to ``root-a-verity`` and gives both partitions the UUIDs the root hash
names — the initrd finds the slot by them. A UKI without ``roothash=`` (a release before dm-verity) boots
``root=PARTLABEL=root-a``: nothing is sealed. The boot entry carries the UKI's command line.

Crash safety (the invariant every step keeps): a disk is bootable only once everything it boots is
written and sealed. The boot entry (``loader/entries/quantix-a.conf``) is written last, atomically;
before that, an interrupted wipe/keep-data install leaves a disk that boots nothing and whose data partition's
``lib/quantix/install.json`` says ``"state": "installing"`` — :mod:`qx_install.disks` shows it as an
incomplete install. keep-data removes the old entries (and gives both slots fresh UUIDs,
:func:`qx_update.seal.unseal`) before converting the table or overwriting slot A, so the old system
is never booted from a half-written slot; its data partition is never reformatted. An interrupted
upgrade leaves the running slot the default (qx-update's own guarantee).

Call order: :func:`plan` (validates everything; writes nothing) → :meth:`Plan.summary` (shown on the
confirm screen) → :func:`execute` (reports :class:`Progress`; raises :class:`InstallError` naming the
step and the log).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qx_common import hostpaths, log, verity
from qx_common import run as r
from qx_common.errors import EnvironmentError_, InternalError, QxError, UserError
from qx_common.slot import verity_label
from qx_console import hostconfig, keyboard, shadow
from qx_console.hostconfig import HostConfig
from qx_console.store import ConfigStore
from qx_install import layout
from qx_install.payload import ENROLL_FILES, Payload
from qx_update import bootentry, crashpoint, seal, slotinstall, slots
from qx_update import esp as espmod
from qx_update import state as upstate
from qx_update.espfat import FatFiles
from qx_common.fs import atomic_write

if TYPE_CHECKING:
    from qx_install.disks import Disk

MODES = ("wipe", "keep-data", "upgrade")
SOURCES = ("installer", "answer-file")   # of hostconfig.SOURCES: who set a setting at install time
# role -> GPT name. Every Quantix disk has the BASE_ROLES; a disk made for dm-verity releases also the
# slots' verity partitions (role "<slot>-verity", named by qx_common.slot.verity_label).
LABELS = {"esp": "esp", "a": "root-a", "a-verity": verity_label("a"), "b": "root-b",
          "b-verity": verity_label("b"), "data": "quantix-data"}
BASE_ROLES = ("esp", "a", "b", "data")
INSTALL_MARKER = "lib/quantix/install.json"          # relative to the data partition (= /var)
UPDATE_STATE = "lib/quantix/update/state.json"       # qx_update.config.Config.state_dir on a host
UPGRADE_TRIES = 3                                     # as qx_update.config.Config.tries
DEFAULT_LOG = Path("/run/quantix/install.log")

_log = log.get("install")


@dataclass(frozen=True)
class Progress:
    """One progress report: step ``index`` of ``total`` (1-based), ``done`` of ``size`` units in it."""

    step: str
    index: int
    total: int
    done: int = 0
    size: int = 0
    message: str = ""

    @property
    def fraction(self) -> float:
        return min(self.done / self.size, 1.0) if self.size else 0.0


ProgressFn = Callable[[Progress], None]


class InstallError(QxError):
    """An install stopped at ``step``; ``log_path`` holds the whole log. Exit code of the cause."""

    def __init__(self, message: str, *, step: str, log_path: Path | None, cause: QxError | None = None) -> None:
        super().__init__(f"{step}: {message}", hint=cause.hint if cause else None)
        self.step = step
        self.log_path = log_path
        self.exit_code = cause.exit_code if cause else InternalError.exit_code


@dataclass(frozen=True)
class Plan:
    disk: Disk
    payload: Payload
    mode: str
    host: HostConfig | None
    root_password_hash: str | None
    keyboard: str
    keep_config: bool
    source: str
    host_fields: tuple[str, ...] = ()
    upgrade_slot: str = ""           # upgrade: the slot that will be written ("a"/"b")
    # The payload UKI's own command line as plan() read it; execute() reads it again after verifying the
    # medium and stops if it changed. Its roothash= (if any) is what slot A is sealed for.
    uki_cmdline: str | None = None
    convert_table: bool = False      # keep-data: the disk predates the payload's layout (qx_install.layout)

    @property
    def writes_config(self) -> bool:
        return self.host is not None

    @property
    def roothash(self) -> str | None:
        """The dm-verity root hash the release boots; None for a release without dm-verity (not sealed)."""
        return verity.roothash_of(self.uki_cmdline)

    def steps(self) -> list[str]:
        sealing = ["seal root slot"] if self.roothash else []
        if self.mode == "wipe":
            return ["verify medium", "prepare", "partition disk", "write root slot", *sealing,
                    "install boot loader", "finish"]
        if self.mode == "keep-data":
            converting = ["convert partition table"] if self.convert_table else []
            return ["verify medium", "prepare", "retire old system", *converting, "write root slot", *sealing,
                    "configure", "install boot loader", "finish"]
        return ["verify medium", "write and switch slot"]

    def summary(self) -> list[str]:
        d = self.disk
        where = f"{d.stable_path} ({d.model or 'disk'}, {_human(d.size)})"
        v = self.payload.version
        if self.mode == "wipe":
            lines = [f"ERASE the whole disk {where}: every partition and all data on it are destroyed."]
            if d.quantix is not None:
                lines.append(f"  It holds Quantix OS {d.quantix.version} ({d.quantix.hostname}): its VMs and "
                             f"configuration are lost.")
            elif d.partitions:
                lines.append("  Existing partitions: " + ", ".join(
                    f"{p.path} {p.fstype or 'unformatted'} {_human(p.size)}" for p in d.partitions))
            lines += [f"Write a new partition table: {self._layout_names()}.",
                      f"Install Quantix OS {v} into slot A{self._sealed()}."]
            if self.host is not None:
                lines.append(f"Host name {self.host.hostname}; keyboard '{self.keyboard}'"
                             + ("; root password set." if self.root_password_hash else "."))
            else:
                lines.append("Factory configuration (DHCP); the console asks for a root password on first boot.")
            return lines
        if self.mode == "keep-data":
            old = d.quantix.version if d.quantix else "?"
            lines = [f"Reinstall Quantix OS on {where}: {old} is replaced by {v} in slot A{self._sealed()}; "
                     "slot B is cleared."]
            if self.convert_table:
                lines.append(f"New partition table: {self._layout_names()}; the slots make room for their "
                             "verity partitions, the ESP and the data partition stay where they are.")
            lines.append("KEPT: the data partition (virtual machines, ISO images, logs).")
            lines.append("KEPT: the host configuration (network, host name, root password)." if self.keep_config
                         else "RESET: the host configuration is replaced by the one entered here.")
            return lines
        old = d.quantix.version if d.quantix else "?"
        return [f"Upgrade Quantix OS on {where} from {old} to {v}:",
                f"  write {v} into the inactive slot {self.upgrade_slot.upper()}{self._sealed()} and boot it next, "
                "on trial;",
                "  if it does not prove itself healthy, the host returns to the current slot by itself.",
                "KEPT: everything else (configuration, virtual machines, the current slot)."]

    def _layout_names(self) -> str:
        """``esp, root-a, root-a-verity, ..., quantix-data (rest of the disk)``: the payload's partitions."""
        return ", ".join(d.label + ("" if d.get("SizeMaxBytes") else " (rest of the disk)")
                         for d in self.payload.definitions())

    def _sealed(self) -> str:
        return " (dm-verity)" if self.roothash else ""


def _human(n: int) -> str:
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def plan(disk: Disk, *, payload: Payload, mode: str, host: HostConfig | None, root_password_hash: str | None,
         keyboard: str = keyboard.DEFAULT_LAYOUT, keep_config: bool = True, source: str = "installer",
         host_fields: tuple[str, ...] = ()) -> Plan:
    """Check that this install can run; write nothing. Raises :class:`UserError` naming what is wrong."""
    if mode not in MODES:
        raise UserError(f"install.mode: '{mode}' is not a mode", hint="use one of: " + ", ".join(MODES))
    if source not in SOURCES:
        raise InternalError(f"unknown settings source {source!r}")
    if disk.boot_medium:
        raise UserError(f"{disk.stable_path} is the installation medium", hint="choose another disk")
    if disk.read_only:
        raise UserError(f"{disk.stable_path} is read-only", hint="choose another disk or remove its write protection")
    need = payload.min_disk_bytes
    if mode == "wipe" and disk.size < need:
        raise UserError(f"{disk.stable_path} is {_human(disk.size)}; Quantix needs at least {_human(need)}",
                        hint="choose a larger disk")
    if (e := keyboard_error(keyboard)):
        raise UserError(str(e), hint=e.hint)
    if mode in ("keep-data", "upgrade"):
        if disk.quantix is None:
            raise UserError(f"{disk.stable_path} holds no Quantix OS install to {mode.replace('-', ' ')}",
                            hint="choose mode 'wipe' for a new install")
    # wipe writes the configuration given (none: the factory defaults, and the console asks for a root
    # password on first boot); keep-data writes one only when the host's own is not kept.
    writes_config = (mode == "wipe" and host is not None) or (mode == "keep-data" and not keep_config)
    if writes_config:
        if host is None:
            raise UserError("the host configuration is missing", hint="enter the network settings and host name")
        hostconfig.validate(host)
    if root_password_hash is not None and not shadow.is_password_hash(root_password_hash):
        raise UserError("install.root_password_hash: is not a crypt hash", hint="make one with: openssl passwd -6")
    if mode == "keep-data" and not keep_config and not root_password_hash:
        raise UserError("install.root_password_hash: is required when the host configuration is reset",
                        hint="set a root password (an answer file gives its hash: openssl passwd -6)")
    upgrade_slot = ""
    if mode == "upgrade":
        q = disk.quantix
        assert q is not None
        if not q.complete:
            raise UserError(f"{disk.stable_path}: the Quantix install on it is incomplete",
                            hint="choose 'keep-data' (reinstall keeping the data partition) or 'wipe'")
        if q.default_slot not in ("a", "b"):
            # Without a readable boot entry we cannot tell which slot the disk boots: writing either
            # one could overwrite the system that works.
            raise UserError(f"{disk.stable_path}: cannot tell which slot boots (no readable boot entry)",
                            hint="choose 'keep-data' (reinstall keeping the data partition) or 'wipe'")
        upgrade_slot = "b" if q.default_slot == "a" else "a"
    _check_not_in_use(disk.path)
    roothash = payload.roothash()          # UserError on a malformed roothash=
    if roothash:
        _check_verity_definitions(payload)
    convert = False
    if mode == "keep-data":
        # Computed (and refused if it cannot be done) now, before the old system is retired.
        conv = layout.conversion(disk.path, payload, disk_size=slots.size_of(Path(disk.path)))
        convert = conv is not None
        parts = _partitions(disk.path)
        _check_slot_fits(conv.size_of(LABELS["a"]) if conv else slots.size_of(Path(parts["a"])),
                         payload, where=f"{disk.path} root-a")
        _check_release(payload, None if conv else _verity_path(parts, "a"), "a")
    elif mode == "wipe":
        _check_release(payload, None, "a")
    elif roothash:
        _check_verity_partition(disk.path, upgrade_slot)
    return Plan(disk=disk, payload=payload, mode=mode, host=host if writes_config else None,
                root_password_hash=root_password_hash if writes_config else None, keyboard=keyboard,
                keep_config=keep_config, source=source, host_fields=host_fields, upgrade_slot=upgrade_slot,
                uki_cmdline=payload.uki_cmdline(), convert_table=convert)


def _check_verity_definitions(payload: Payload) -> None:
    """A dm-verity release's root is whole 4 KiB blocks (what a hash tree covers), and its partition
    definitions give both slots a verity partition that holds a tree of the slot's size."""
    try:
        need = verity.tree_size(payload.slot_size)
    except verity.VerityError as e:
        raise UserError(f"installation medium: the root's uncompressed_size in the manifest: {e}",
                        hint="the medium holds a broken release: rebuild it with make image") from e
    defs = {d.label: d for d in payload.definitions()}
    for slot in ("a", "b"):
        d = defs.get(verity_label(slot))
        if d is None:
            raise UserError(f"installation medium: the UKI boots dm-verity but the partition definitions have no "
                            f"{verity_label(slot)}", hint="the medium mixes two builds: rebuild it with make image")
        if need > d.min_bytes:
            raise UserError(f"installation medium: the root's hash tree ({_human(need)}) does not fit "
                            f"{verity_label(slot)} ({_human(d.min_bytes)})",
                            hint="enlarge image/repart/*-verity.conf and rebuild the medium")


def _check_release(payload: Payload, verity_path: Path | None, slot: str) -> None:
    """qx-update's own checks of a release against the slot it goes to
    (:func:`qx_update.slotinstall.verity_roothash`: a dm-verity UKI mounts the verity device, the manifest
    agrees with the UKI, the slot's verity partition holds the tree). ``verity_path`` None: the partition
    is still to be made (wipe, a table to convert) from definitions already checked to hold the tree."""
    try:
        slotinstall.verity_roothash(payload.uki, verity_path, rel=_release(payload), target=slot)
    except EnvironmentError_:
        if verity_path is not None:
            raise


def _check_verity_partition(disk: str, slot: str) -> None:
    """An upgrade to a dm-verity release needs the target slot's verity partition on the disk."""
    if verity_label(slot) not in layout.labels_of(layout.read_table(disk)):
        raise UserError(f"{disk} has no partition {verity_label(slot)}: it was installed before dm-verity, and "
                        f"this release boots only from a sealed slot",
                        hint="choose 'keep-data' (reinstall keeping the data partition: it converts the "
                             "partition table)")


def keyboard_error(name: str) -> hostconfig.FieldError | None:
    return keyboard.check_layout(name)


def _check_not_in_use(disk_path: str) -> None:
    """Refuse a disk with a mounted partition (the running system, a mounted data disk...)."""
    real = os.path.realpath(disk_path)
    base = os.path.basename(real)
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    holders = {base} | {p.name for p in Path(f"/sys/class/block/{base}").glob(f"{base}*")}
    for line in mounts:
        parts = line.split(" - ", 1)
        if len(parts) != 2:
            continue
        src = parts[1].split()[1] if len(parts[1].split()) > 1 else ""
        if src.startswith("/dev/") and os.path.basename(os.path.realpath(src)) in holders:
            mnt = parts[0].split()[4]
            raise UserError(f"{disk_path}: {src} is mounted at {mnt}",
                            hint="choose another disk, or unmount it first")


# ---------------------------------------------------------------------------------------------
# Execution


@dataclass
class Result:
    mode: str
    disk: str
    version: str
    slot: str
    log_path: Path | None
    seconds: dict[str, float] = field(default_factory=dict)   # step -> seconds (bench figures)


class _Run:
    """One execution: the log, the progress callback, the step bookkeeping."""

    def __init__(self, p: Plan, progress: ProgressFn | None, log_path: Path | None) -> None:
        self.plan = p
        self.cb = progress
        self.steps = p.steps()
        self.index = 0
        self.step = ""
        self.log_path = log_path
        self.seconds: dict[str, float] = {}
        self._t = 0.0
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text("")

    def log(self, text: str) -> None:
        _log.info("%s", text)
        if self.log_path is not None:
            with self.log_path.open("a") as f:
                f.write(f"{dt.datetime.now(dt.timezone.utc):%H:%M:%S} {text}\n")

    def begin(self, step: str) -> None:
        if self.step:
            self.seconds[self.step] = time.monotonic() - self._t
        self.index = self.steps.index(step) + 1
        self.step = step
        self._t = time.monotonic()
        self.log(f"step {self.index}/{len(self.steps)}: {step}")
        self.report(0, 0, step)

    def report(self, done: int, size: int, message: str = "") -> None:
        if self.cb is not None:
            self.cb(Progress(self.step, self.index, len(self.steps), done, size, message or self.step))

    def end(self) -> None:
        if self.step:
            self.seconds[self.step] = time.monotonic() - self._t


LOCK_FILE = Path("/run/quantix/install.lock")


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """One install at a time on this machine (tty1, the serial console and an unattended run could
    otherwise write the same disk at once): an flock held for the whole install."""
    import fcntl

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EnvironmentError_("another installation is running on this machine",
                                    hint="wait for it to finish (its progress is on the console)") from None
        yield
    finally:
        os.close(fd)


def execute(p: Plan, progress: ProgressFn | None = None, *, log_path: Path | None = DEFAULT_LOG,
            lock_file: Path | None = None) -> Result:
    """Carry out ``p``. Raises :class:`InstallError` (the step, the cause, the log) on failure.
    ``lock_file``: default :data:`LOCK_FILE`, looked up at call time."""
    with _exclusive(lock_file or LOCK_FILE):
        return _execute(p, progress, log_path)


def _execute(p: Plan, progress: ProgressFn | None, log_path: Path | None) -> Result:
    run = _Run(p, progress, log_path)
    run.log(f"installing Quantix OS {p.payload.version} on {p.disk.path} ({p.disk.stable_path}), mode {p.mode}")
    try:
        run.begin("verify medium")
        p.payload.verify(lambda done, total: run.report(done, total, "checking the installation medium"))
        if p.payload.uki_cmdline() != p.uki_cmdline:
            raise UserError(f"installation medium: {p.payload.uki.name} changed since the install was planned",
                            hint="start the installation again")
        if p.mode == "wipe":
            slot = _wipe(run)
        elif p.mode == "keep-data":
            slot = _keep_data(run)
        else:
            slot = _upgrade(run)
        run.end()
    except QxError as e:
        run.log(f"FAILED at '{run.step}': {e}" + (f" (hint: {e.hint})" if e.hint else ""))
        raise InstallError(str(e), step=run.step, log_path=log_path, cause=e) from e
    except OSError as e:
        run.log(f"FAILED at '{run.step}': {e}")
        raise InstallError(f"{e.strerror or e}", step=run.step, log_path=log_path,
                           cause=EnvironmentError_(str(e))) from e
    run.log(f"done: Quantix OS {p.payload.version} in slot {slot.upper()} of {p.disk.path}")
    run.report(1, 1, "done")
    return Result(p.mode, p.disk.path, p.payload.version, slot, log_path, run.seconds)


# -- wipe --------------------------------------------------------------------------------------


def _wipe(run: _Run) -> str:
    p = run.plan
    with tempfile.TemporaryDirectory(prefix="qx-install-") as tmp:
        run.begin("prepare")
        stage = Path(tmp) / "stage"
        _stage_esp(stage / "efi", p.payload)
        (stage / "boot").mkdir(parents=True)
        _stage_data(run, stage / "var")
        defs = Path(tmp) / "repart.d"
        layout.write_definitions(p.payload, defs)
        run.begin("partition disk")
        run.log(f"systemd-repart: new partition table on {p.disk.path}")
        offline = _repart_offline()
        run.log(f"systemd-repart --offline={offline}")
        r.run(["systemd-repart", "--dry-run=no", "--empty=force", "--no-pager", "--seed=random",
               f"--offline={offline}", f"--definitions={defs}", f"--root={stage}", p.disk.path])
        _reread_table(p.disk.path)
    parts = _partitions(p.disk.path, required=_roles(p))
    crashpoint.reached("install-partitioned")
    _check_sealable(run, parts, "a")
    _write_slot(run, parts["a"])
    _seal_slot(run, parts, "a")
    run.begin("install boot loader")
    crashpoint.reached("install-entry")
    _write_entry(FatFiles(parts["esp"]), p)
    crashpoint.reached("install-entered")
    run.begin("finish")
    _finish(run, parts["data"])
    return "a"


# -- keep-data ---------------------------------------------------------------------------------


def _keep_data(run: _Run) -> str:
    p = run.plan
    parts = _partitions(p.disk.path)
    with tempfile.TemporaryDirectory(prefix="qx-install-") as tmp:
        run.begin("prepare")
        esp_stage = Path(tmp) / "efi"
        _stage_esp(esp_stage, p.payload)
        run.begin("retire old system")
        esp_files = FatFiles(parts["esp"])
        e = espmod.Esp(esp_files)
        for slot in bootentry.SLOTS:
            e.remove_entry(slot)   # from here on, nothing boots a half-written slot
        _unseal_slots(run, parts)
        with _mounted(parts["data"], "ext4") as data:
            _write_marker(data, p, "installing")
        crashpoint.reached("install-retired")
        if p.convert_table:
            _convert_table(run)
        parts = _partitions(p.disk.path, required=_roles(p))
        _check_slot_fits(slots.size_of(Path(parts["a"])), p.payload, where=parts["a"])
        _check_sealable(run, parts, "a")
        _write_slot(run, parts["a"])
        _seal_slot(run, parts, "a")
        run.begin("configure")
        with _mounted(parts["data"], "ext4") as data:
            _reset_update_state(run, data)
            if p.writes_config:
                root = Path(tmp) / "root"
                (root / "var").mkdir(parents=True)
                (root / "var").rmdir()
                (root / "var").symlink_to(data)
                store = ConfigStore(root)
                run.log("resetting the host configuration to the one entered")
                store.reset()
                _write_config(run, root)
        crashpoint.reached("install-configured")
        run.begin("install boot loader")
        _replace_esp(esp_files, esp_stage)
        crashpoint.reached("install-entry")
        _write_entry(esp_files, p)
        crashpoint.reached("install-entered")
    run.begin("finish")
    _finish(run, parts["data"])
    return "a"


# -- upgrade -----------------------------------------------------------------------------------


def _upgrade(run: _Run) -> str:
    p = run.plan
    parts = _partitions(p.disk.path)
    target = p.upgrade_slot
    running = "a" if target == "b" else "b"
    run.begin("write and switch slot")
    _check_slot_fits(slots.size_of(Path(parts[target])), p.payload, where=parts[target])
    with _mounted(parts["data"], "ext4") as data:
        e = espmod.Esp(FatFiles(parts["esp"]))
        current = e.slots().get(running)
        state_file = data / UPDATE_STATE
        st = upstate.load(state_file)
        rel = _release(p.payload)
        if rel.security_epoch < st.security_epoch_floor:
            raise UserError(f"{p.payload.version} has security epoch {rel.security_epoch}, below this host's "
                            f"floor {st.security_epoch_floor}", hint="install a newer release")
        slotinstall.write_and_switch(
            e=e, st=st, save=lambda: upstate.save(state_file, st), rel=rel, payload=p.payload.root,
            uki=p.payload.uki, target=target, running=running, slot_path=Path(parts[target]),
            verity_path=_verity_path(parts, target),
            from_version=current.version if current else "?", tries=UPGRADE_TRIES,
            progress=lambda label, done, total: run.report(done, total, label))
        run.log(f"slot {target.upper()} holds {p.payload.version}; it boots next with {UPGRADE_TRIES} tries")
    return target


# -- pieces ------------------------------------------------------------------------------------


def _stage_esp(esp: Path, payload: Payload) -> None:
    """The ESP's content without any boot entry: loader, the release's UKI, loader.conf, the Secure Boot
    enrollment files."""
    for rel in ("EFI/BOOT/BOOTX64.EFI", "EFI/systemd/systemd-bootx64.efi"):
        (esp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(payload.bootloader, esp / rel)
    uki = esp / bootentry.uki_path(payload.version)
    uki.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(payload.uki, uki)
    (esp / bootentry.ENTRIES_DIR).mkdir(parents=True)
    (esp / bootentry.LOADER_CONF).write_text(bootentry.render_loader_conf())
    if payload.enroll_keys is not None:
        # Offered in systemd-boot's menu only while the firmware is in setup mode (loader.conf: manual).
        keys = esp / bootentry.ENROLL_KEYS_DIR
        keys.mkdir(parents=True)
        for name in ENROLL_FILES:
            shutil.copyfile(payload.enroll_keys / name, keys / name)


def _stage_data(run: _Run, var: Path) -> None:
    """The data partition's factory tree + this host's configuration, password, keyboard, marker."""
    p = run.plan
    var.mkdir(parents=True)
    run.log("unpacking the data partition's factory tree")
    r.run(["tar", "--zstd", "-xpf", str(p.payload.data), "--numeric-owner", "-C", str(var)])
    if p.writes_config:
        _write_config(run, var.parent)
    else:
        keyboard.write_layout(var.parent, p.keyboard)
        run.log("no configuration given: factory defaults; the console asks for a root password on first boot")
    _write_marker(var, p, "installing")


def _write_config(run: _Run, root: Path) -> None:
    """Host configuration, root password hash and keyboard under ``root`` (a tree with /var in it)."""
    p = run.plan
    assert p.host is not None
    store = ConfigStore(root)
    fields = p.host_fields or ("hostname", *hostconfig.NETWORK_FIELDS, "ssh", "update_channel", "lockdown")
    store.save(p.host, p.source, tuple(fields))
    if p.root_password_hash:
        shadow_file = store.dir / "shadow"
        if not shadow_file.exists():
            raise EnvironmentError_(f"{shadow_file}: the factory shadow file is missing from the payload",
                                    hint="the installation medium is incomplete: rebuild it with make image")
        shadow.set_password_hash(shadow_file, "root", p.root_password_hash)
    keyboard.write_layout(root, p.keyboard)
    # Lockdown is the file SSH and qx-node obey (the config field only records the choice): an answer
    # file's ``lockdown = true`` must leave a host that boots locked down, as the console's switch does.
    lockdown = root / str(hostpaths.lockdown_file()).lstrip("/")
    if p.host.lockdown:
        atomic_write(lockdown, f"on: {p.source}\n", mode=0o644)
    else:
        lockdown.unlink(missing_ok=True)
    run.log(f"configuration written (source {p.source}): hostname {p.host.hostname}, keyboard {p.keyboard}, "
            f"lockdown {'on' if p.host.lockdown else 'off'}")


def _write_marker(var: Path, p: Plan, state: str) -> None:
    info: dict[str, Any] = {"state": state, "version": p.payload.version, "mode": p.mode, "source": p.source,
                            "at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    atomic_write(var / INSTALL_MARKER, json.dumps(info, sort_keys=True) + "\n")


def _repart_offline() -> str:
    """How repart fills the new filesystems. Online (mounting them) where the kernel has vfat — on the
    installer ISO, whose /var/tmp is RAM: offline, repart would build each filesystem in a temp file
    the size of its partition there. Offline (mkfs -d, mcopy: nothing mounted) where vfat cannot be
    mounted, as on kernels without it."""
    r.run(["modprobe", "-q", "vfat"], check=False) if r.which("modprobe") else None
    try:
        has_vfat = any(line.split()[-1] == "vfat" for line in Path("/proc/filesystems").read_text().splitlines()
                       if line.strip())
    except OSError:
        has_vfat = False
    return "no" if has_vfat else "yes"


def _reread_table(disk: str) -> None:
    """Make the kernel see the new table: BLKRRPART, and partx for devices that ignore it (loop here)."""
    r.run(["blockdev", "--rereadpt", disk], check=False)
    r.run(["partx", "--update", disk], check=False)


def _roles(p: Plan) -> tuple[str, ...]:
    """The partitions an install of ``p`` needs on the disk once it is partitioned (or converted)."""
    return (*BASE_ROLES, "a-verity", "b-verity") if p.roothash else BASE_ROLES


def _partitions(disk: str, *, required: tuple[str, ...] = BASE_ROLES) -> dict[str, str]:
    """Partition device nodes of ``disk`` by role (:data:`LABELS`), from its GPT labels: every ``required``
    role, and the others the disk has (waits for the kernel's nodes)."""
    by_label = {p.get("name", ""): p["node"] for p in layout.read_table(disk)["partitions"]}
    found: dict[str, str] = {}
    for role, label in LABELS.items():
        if label in by_label:
            found[role] = by_label[label]
        elif role in required:
            hint = ("this disk does not hold a Quantix layout: choose mode 'wipe'" if role in BASE_ROLES else
                    "the disk was installed before dm-verity: choose mode 'keep-data' (it converts the table)")
            raise UserError(f"{disk}: no partition labelled '{label}'", hint=hint)
    deadline = time.monotonic() + 15
    while not all(os.path.exists(n) for n in found.values()):
        if time.monotonic() > deadline:
            missing = [n for n in found.values() if not os.path.exists(n)]
            raise EnvironmentError_(f"{disk}: partition device(s) {', '.join(missing)} did not appear",
                                    hint="for a loop device, attach it with losetup -P (partition scan)")
        r.run(["udevadm", "settle", "--timeout=2"], check=False) if r.which("udevadm") else None
        time.sleep(0.2)  # the kernel creates partition nodes asynchronously after a table re-read
    return found


def _release(payload: Payload) -> slotinstall.Release:
    return slotinstall.Release(version=payload.version, security_epoch=payload.security_epoch,
                               slot_size=payload.slot_size, slot_sha256=payload.slot_sha256,
                               kernel_cmdline=payload.kernel_cmdline)


def _verity_path(parts: dict[str, str], slot: str) -> Path | None:
    """``slot``'s dm-verity partition, None on a disk installed before verity."""
    node = parts.get(f"{slot}-verity")
    return Path(node) if node else None


def _check_slot_fits(capacity: int, payload: Payload, *, where: str) -> None:
    if payload.slot_size > capacity:
        raise UserError(f"{where} has {_human(capacity)}; release {payload.version} needs "
                        f"{_human(payload.slot_size)}",
                        hint="choose mode 'wipe' (a new partition table with larger slots)")


def _unseal_slots(run: _Run, parts: dict[str, str]) -> None:
    """Fresh random UUIDs for both slots of a disk that has verity partitions: neither is found by the root
    hash of what it held (slot A is about to be overwritten; slot B's entry is gone)."""
    for slot in bootentry.SLOTS:
        if f"{slot}-verity" in parts:
            seal.unseal(Path(parts[slot]), Path(parts[f"{slot}-verity"]))
            run.log(f"slot {slot.upper()}: unsealed (fresh partition UUIDs)")


def _convert_table(run: _Run) -> None:
    """keep-data on a disk from before dm-verity: the payload's slot partitions, the ESP and the data
    partition kept in place (:mod:`qx_install.layout`); nothing to do when a previous run converted it."""
    p = run.plan
    run.begin("convert partition table")
    conv = layout.conversion(p.disk.path, p.payload, disk_size=slots.size_of(Path(p.disk.path)))
    if conv is None:
        run.log("the partition table has the payload's layout already")
    else:
        run.log(f"new partition table: {conv.describe()}")
        layout.write(conv)
        _reread_table(p.disk.path)
    crashpoint.reached("install-converted")


def _write_slot(run: _Run, dev: str) -> None:
    run.begin("write root slot")
    pl = run.plan.payload
    run.log(f"writing {pl.root.name} ({_human(pl.slot_size)}) into {dev}, then reading it back")
    slots.write_payload(pl.root, Path(dev), slot_size=pl.slot_size, slot_sha256=pl.slot_sha256,
                        progress=lambda label, done, total: run.report(done, total, label))
    crashpoint.reached("written")


def _check_sealable(run: _Run, parts: dict[str, str], slot: str) -> None:
    """Before ``slot`` is written: qx-update's own checks of a release against the slot it goes to
    (:func:`qx_update.slotinstall.verity_roothash`: a well-formed root hash the UKI mounts, a verity
    partition that holds its tree, a manifest that agrees), and the root hash is the one planned."""
    p = run.plan
    found = slotinstall.verity_roothash(p.payload.uki, _verity_path(parts, slot), rel=_release(p.payload),
                                        target=slot)
    if found != p.roothash:
        raise InternalError(f"the release's root hash is {found}, the plan's {p.roothash}")


def _seal_slot(run: _Run, parts: dict[str, str], slot: str) -> None:
    """Seal the written ``slot`` for the release's root hash (a release without dm-verity: nothing to do).
    Raises VerificationError, before any boot entry exists, when the slot's tree is not the UKI's."""
    p = run.plan
    roothash = p.roothash
    if roothash is None:
        return
    run.begin("seal root slot")
    run.log(f"sealing {parts[slot]} for root hash {roothash}: hash tree into {parts[f'{slot}-verity']}")
    seal.seal(Path(parts[slot]), Path(parts[f"{slot}-verity"]), slot_size=p.payload.slot_size,
              slot_sha256=p.payload.slot_sha256, roothash=roothash,
              progress=lambda label, done, total: run.report(done, total, label))
    crashpoint.reached("install-sealed")


def _write_entry(files: FatFiles, p: Plan) -> None:
    """Slot A's boot entry (no boot counter: the first install has nothing to fall back to) — the switch.
    A dm-verity release's entry carries its UKI's own command line (the root hash the slot is sealed for)."""
    name = bootentry.EntryName("a")
    base = p.uki_cmdline if p.roothash and p.uki_cmdline else p.payload.kernel_cmdline
    files.write(f"{bootentry.ENTRIES_DIR}/{name.filename}",
                bootentry.render_entry(version=p.payload.version, slot="a", base_cmdline=base).encode())


def _replace_esp(files: FatFiles, staged: Path) -> None:
    """keep-data: the new loader and UKI in place of the old Quantix files (entries were removed)."""
    for name in files.names(bootentry.UKI_DIR):
        files.remove(f"{bootentry.UKI_DIR}/{name}")
    for src in sorted(staged.rglob("*")):
        if src.is_file():
            files.copy_in(src, src.relative_to(staged).as_posix())


def _reset_update_state(run: _Run, data: Path) -> None:
    """A reinstall starts qx-update's bookkeeping afresh (pending/slots described the old system); the
    security-epoch floor is kept: an operator reinstalling does not lower what updates must meet."""
    state_file = data / UPDATE_STATE
    try:
        old = upstate.load(state_file)
    except QxError:
        old = upstate.State()
    new = upstate.State(security_epoch_floor=old.security_epoch_floor, host_id=old.host_id)
    new.event("reinstalled", version=run.plan.payload.version)
    upstate.save(state_file, new)
    run.log(f"update state reset (security-epoch floor {new.security_epoch_floor} kept)")


def _finish(run: _Run, data_dev: str) -> None:
    with _mounted(data_dev, "ext4") as data:
        _write_marker(data, run.plan, "complete")
    r.run(["sync"])


@contextlib.contextmanager
def _mounted(dev: str, fstype: str) -> Iterator[Path]:
    mnt = Path(tempfile.mkdtemp(prefix="qx-install-mnt-"))
    try:
        r.run(["mount", "-t", fstype, "-o", "nosuid,nodev,noexec", dev, str(mnt)])
        try:
            yield mnt
        finally:
            r.run(["umount", str(mnt)])
    finally:
        with contextlib.suppress(OSError):
            mnt.rmdir()
