"""A tiny guest for the real-libvirtd test: the host's Debian kernel and a busybox initrd packed here.

``build_guest(dest)`` writes ``dest/qx-guest-vmlinuz`` (a copy of the newest ``/boot/vmlinuz-*`` that
has its modules under ``/lib/modules``; package ``linux-image-amd64``) and ``dest/qx-guest-initrd.img``
(an uncompressed cpio "newc" archive built in Python: ``busybox`` from ``busybox-static``, the
``evdev`` and ``button`` modules of that kernel, and the ``/init`` below). Both packages are in
tests/host-packages.txt.

The guest's ``/init`` loads the ACPI power-button driver, arms a watcher on the "Power Button" input
device that runs ``poweroff -f`` on its first event, and only then prints :data:`READY` on the
console (ttyS0) once a second, so a test that sees the marker knows an ACPI shutdown will be honoured.
"""

from __future__ import annotations

import lzma
import re
import shutil
import stat
from pathlib import Path

READY = "QX-GUEST-READY"
NO_BUTTON = "QX-GUEST-NO-POWER-BUTTON"
POWERING_OFF = "QX-GUEST-POWER-BUTTON"
CMDLINE = "console=ttyS0 quiet"
KERNEL_NAME = "qx-guest-vmlinuz"
INITRD_NAME = "qx-guest-initrd.img"

INIT = f"""#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
insmod /lib/evdev.ko
# qx.fill=N on the kernel command line: N MiB of random data in RAM (the rootfs is RAM), so that a
# snapshot with memory has something to save that does not compress to nothing.
for arg in $(cat /proc/cmdline); do
    case "$arg" in qx.fill=*) dd if=/dev/urandom of=/fill bs=1M count=${{arg#qx.fill=}} 2>/dev/null;; esac
done
insmod /lib/button.ko
armed=0
i=0
# The button driver registers its input device asynchronously: look for it for up to ~5 s.
while [ $armed = 0 ] && [ $i -lt 50 ]; do
    for ev in /sys/class/input/event*; do
        [ -e "$ev/device/name" ] || continue
        read name < "$ev/device/name"
        if [ "$name" = "Power Button" ]; then
            # One input_event is 24 bytes on x86_64: the first press powers the guest off.
            (dd if=/dev/input/${{ev##*/}} of=/dev/null bs=24 count=1 2>/dev/null; echo {POWERING_OFF}; poweroff -f) &
            armed=1
        fi
    done
    [ $armed = 1 ] || {{ sleep 0.1; i=$((i + 1)); }}
done
[ $armed = 1 ] || {{ echo {NO_BUTTON}; ls /sys/class/input; }}
while :; do
    [ $armed = 1 ] && echo {READY}
    sleep 1
done
"""


def _kernel() -> tuple[Path, Path]:
    """The newest /boot/vmlinuz-VER whose /lib/modules/VER exists."""
    found = []
    for k in Path("/boot").glob("vmlinuz-*"):
        ver = k.name.removeprefix("vmlinuz-")
        mods = Path("/lib/modules") / ver
        if mods.is_dir():
            key = tuple(int(x) for x in re.findall(r"\d+", ver))
            found.append((key, k, mods))
    if not found:
        raise AssertionError("no /boot/vmlinuz-* with /lib/modules: install linux-image-amd64 "
                             "(tests/host-packages.txt)")
    _, k, mods = max(found)
    return k, mods


def _module(mods: Path, rel: str) -> bytes:
    """A module's bytes, decompressed when Debian ships it as .ko.xz (busybox insmod wants plain ELF)."""
    plain = mods / "kernel" / f"{rel}.ko"
    if plain.exists():
        return plain.read_bytes()
    xz = plain.with_name(plain.name + ".xz")
    if xz.exists():
        return lzma.decompress(xz.read_bytes())
    raise AssertionError(f"{plain}: module missing (need .ko or .ko.xz)")


class _Cpio:
    """Writer of the "newc" cpio format the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.ino += 1
        self.out += b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        self._pad()
        self.out += data
        self._pad()

    def _pad(self) -> None:
        self.out += b"\0" * (-len(self.out) % 4)

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return bytes(self.out)


def build_guest(dest: Path) -> tuple[Path, Path]:
    """Write the kernel and the initrd into ``dest`` (mode 0644: QEMU runs as another user)."""
    kernel, mods = _kernel()
    busybox = shutil.which("busybox")
    if busybox is None:
        raise AssertionError("busybox missing: install busybox-static (tests/host-packages.txt)")
    c = _Cpio()
    for d in ("bin", "dev", "lib", "proc", "sys"):
        c.add(d, stat.S_IFDIR | 0o755)
    c.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    c.add("bin/busybox", stat.S_IFREG | 0o755, Path(busybox).read_bytes())
    for applet in ("sh", "mount", "insmod", "read", "dd", "echo", "poweroff", "sleep", "ls", "cat"):
        c.add(f"bin/{applet}", stat.S_IFLNK | 0o777, b"busybox")
    c.add("lib/evdev.ko", stat.S_IFREG | 0o644, _module(mods, "drivers/input/evdev"))
    c.add("lib/button.ko", stat.S_IFREG | 0o644, _module(mods, "drivers/acpi/button"))
    c.add("init", stat.S_IFREG | 0o755, INIT.encode())
    dest.mkdir(parents=True, exist_ok=True)
    k_out, i_out = dest / KERNEL_NAME, dest / INITRD_NAME
    shutil.copyfile(kernel, k_out)
    i_out.write_bytes(c.finish())
    for p in (k_out, i_out):
        p.chmod(0o644)
    return k_out, i_out
