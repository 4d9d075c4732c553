"""Booting our images in QEMU (``make boot``, ``make boot-iso`` and the e2e tests).

``Machine(secure_boot_vars=...)`` boots the enforcing Secure Boot firmware with a variable store that
already trusts a certificate (:func:`enrolled_vars`: PK, KEK and db set to it with virt-fw-vars, Microsoft's
keys left out), as a server whose operator enrolled the Quantix key does.

KVM is used only when it really works: /dev/kvm usable *and* the CPU exposes vmx/svm. On our CI
machines /dev/kvm is a nested software backend without those flags, on which OVMF dies at once, so
we fall back to TCG (``-accel tcg -cpu max``), as documented in shared/docs/platform.md.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from qx_common import run as r
from qx_common.errors import EnvironmentError_, UserError

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Secure Boot: the firmware build that enforces signatures (it needs SMM, and its variable store must be
# writable only from SMM, or the OS could change the keys it is checked against).
OVMF_CODE_SECBOOT = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
# The owner GUID recorded with our certificate in the signature lists (informational to the firmware).
SIGNATURE_OWNER = "6e7a3f0c-2b1d-4c8e-9a55-51b0a7c0de01"
ACCELS = ("auto", "kvm", "tcg")
GUEST_SERVICE_ADDR = "10.0.2.100"  # inside QEMU's user network (10.0.2.0/24): see Machine.guest_services
NIC_PCI_SLOT = 8
GUEST_NIC = f"enp0s{NIC_PCI_SLOT}"  # systemd's predictable name for the NIC at 00:08.0


def kvm_usable() -> bool:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " vmx" in flags or " svm" in flags


def resolve_accel(accel: str) -> str:
    if accel not in ACCELS:
        raise UserError(f"ACCEL={accel} is not one of {', '.join(ACCELS)}", hint="e.g. make boot ACCEL=tcg")
    if accel == "auto":
        return "kvm" if kvm_usable() else "tcg"
    if accel == "kvm" and not kvm_usable():
        raise EnvironmentError_("ACCEL=kvm but KVM cannot run guests here (no vmx/svm or no /dev/kvm access)",
                                hint="use ACCEL=auto or ACCEL=tcg")
    return accel


def enrolled_vars(cert: Path, out: Path) -> Path:
    """A copy of OVMF's empty variable store with ``cert`` (PEM) as PK, KEK and db and Secure Boot on."""
    if not OVMF_VARS.exists():
        raise EnvironmentError_(f"{OVMF_VARS} is missing", hint="apt-get install ovmf")
    out.unlink(missing_ok=True)
    # Explicit PK/KEK/db: virt-fw-vars' --enroll-cert sets PK and KEK only (and adds Microsoft's KEK).
    owner = SIGNATURE_OWNER
    r.run([r.require("virt-fw-vars"), "--input", str(OVMF_VARS), "--output", str(out),
           "--set-pk", owner, str(cert), "--add-kek", owner, str(cert), "--add-db", owner, str(cert),
           "--secure-boot"])
    return out


@dataclass
class Machine:
    """One QEMU machine definition; ``argv()`` builds the command line."""

    workdir: Path
    disk: Path | None = None
    iso: Path | None = None
    accel: str = "auto"
    memory_mb: int = 2048
    cpus: int = 2
    serial_log: Path | None = None
    # A second serial port (the guest's ttyS1) logged to this file: a clean channel for test agents,
    # apart from the console that paints on ttyS0.
    serial2_log: Path | None = None
    # guestfwd rules: (guest port on 10.0.2.100, shell command QEMU spawns per connection, talking on
    # its stdin/stdout). The guest reaches a host service only through such a command; with
    # restrict=on nothing else leaves QEMU's user-mode network.
    guest_services: list[tuple[int, str]] = field(default_factory=list)
    # The console serial port on a unix socket as well as in serial_log: a test types on it (F2, a
    # password) as an operator would on a serial console. Output is logged whether or not anyone listens.
    serial_socket: Path | None = None
    # More virtio disks: (file, format, serial). The serial becomes /dev/disk/by-id/virtio-<serial>.
    drives: list[tuple[Path, str, str]] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    # A variable store with Secure Boot keys (enrolled_vars): the enforcing firmware boots with a copy.
    secure_boot_vars: Path | None = None
    # A disk image plugged in as a USB stick (an ISO written with dd): USB mass storage on an xHCI
    # controller, through a qcow2 overlay like ``disk``, and first in the firmware's boot order, as an
    # operator picks the stick in the boot menu. Without the boot index the firmware boots virtio disks
    # in PCI order, so a machine with an installed disk would boot that instead.
    usb: Path | None = None

    def prepare(self) -> None:
        """Fresh UEFI variables and a qcow2 overlay, so the image under test is never modified."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for f in (self._code, self.secure_boot_vars or OVMF_VARS):
            if not f.exists():
                raise EnvironmentError_(f"{f} is missing", hint="apt-get install ovmf")
        shutil.copyfile(self.secure_boot_vars or OVMF_VARS, self.workdir / "vars.fd")
        for image, overlay in ((self.disk, self.workdir / "disk.qcow2"), (self.usb, self.workdir / "usb.qcow2")):
            if image is not None:
                overlay.unlink(missing_ok=True)
                r.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", image.resolve(), overlay])

    @property
    def _code(self) -> Path:
        return OVMF_CODE_SECBOOT if self.secure_boot_vars is not None else OVMF_CODE

    def argv(self) -> list[str]:
        accel = resolve_accel(self.accel)
        sb = self.secure_boot_vars is not None
        argv = [r.require("qemu-system-x86_64"), "-machine", "q35,smm=on" if sb else "q35", "-smp", str(self.cpus),
                "-m", str(self.memory_mb),
                "-accel", accel, "-cpu", "host" if accel == "kvm" else "max",
                *(["-global", "driver=cfi.pflash01,property=secure,value=on"] if sb else []),
                "-drive", f"if=pflash,format=raw,readonly=on,file={self._code}",
                "-drive", f"if=pflash,format=raw,file={self.workdir / 'vars.fd'}",
                "-device", "virtio-rng-pci",
                # User-mode networking: the guest gets 10.0.2.15 inside QEMU's own stack; nothing leaves it.
                "-netdev", "user,id=net0,restrict=on" + "".join(
                    f",guestfwd=tcp:{GUEST_SERVICE_ADDR}:{port}-cmd:{cmd.replace(',', ',,')}"
                    for port, cmd in self.guest_services),
                # A fixed PCI slot gives the NIC a fixed name in the guest (GUEST_NIC), which an answer
                # file or a test can name.
                "-device", f"virtio-net-pci,netdev=net0,addr={NIC_PCI_SLOT:#x}"]
        if self.serial_log is not None and self.serial_socket is not None:
            argv += ["-display", "none", "-monitor", "none",
                     "-chardev", f"socket,id=ser0,path={self.serial_socket},server=on,wait=off,logfile={self.serial_log}",
                     "-serial", "chardev:ser0"]
            if self.serial2_log is not None:
                argv += ["-serial", f"file:{self.serial2_log}"]
        elif self.serial_log is not None:
            argv += ["-display", "none", "-serial", f"file:{self.serial_log}", "-monitor", "none"]
            if self.serial2_log is not None:
                argv += ["-serial", f"file:{self.serial2_log}"]
        else:
            argv += ["-nographic"]  # serial console and QEMU monitor on this terminal (Ctrl-A X quits)
        if self.disk is not None:
            argv += ["-drive", f"if=virtio,file={self.workdir / 'disk.qcow2'},format=qcow2"]
        for i, (f, fmt, serial) in enumerate(self.drives):
            argv += ["-drive", f"if=none,id=extra{i},file={f.resolve()},format={fmt}",
                     "-device", f"virtio-blk-pci,drive=extra{i},serial={serial}"]
        if self.usb is not None:
            argv += ["-device", "qemu-xhci,id=xhci",
                     "-drive", f"if=none,id=usbstick,file={self.workdir / 'usb.qcow2'},format=qcow2",
                     "-device", "usb-storage,bus=xhci.0,drive=usbstick,removable=on,bootindex=0"]
        if self.iso is not None:
            argv += ["-drive", f"if=none,id=cd,media=cdrom,readonly=on,file={self.iso.resolve()}",
                     "-device", "ide-cd,drive=cd,bootindex=0" if self.disk is None and self.usb is None
                     else "ide-cd,drive=cd"]
        return argv + self.extra
