"""Boot the real image in QEMU (TCG here) and check, on the serial console, what an operator sees."""

from __future__ import annotations

import json
import re

import pytest

from qx_build.paths import Release
from tests.e2e import secureboot
from tests.e2e.conftest import BOOT_TIMEOUT

# Either the node said it is unhealthy, or the unit that reports it died: stop waiting at once.
BOOT_FAILED = r"QUANTIX-NODE-UNHEALTHY.*|Failed to start qx-(?:boot-report|node)\S*"


def _mount(guest_log: str, target: str) -> dict[str, str]:
    """The mount an access to ``target`` sees: findmnt's last line for it (an automount point lists the
    autofs trigger first, then the filesystem mounted over it)."""
    found = [{"source": m.group(2), "fstype": m.group(3), "options": m.group(4)}
             for m in re.finditer(r'TARGET="([^"]*)" SOURCE="([^"]*)" FSTYPE="([^"]*)" OPTIONS="([^"]*)"', guest_log)
             if m.group(1) == target]
    if not found:
        raise AssertionError(f"no findmnt line for {target} on the serial console")
    return found[-1]


FIRST_PASSWORD = "first-boot-pw-7"
F2 = "\x1bOQ"           # what a vt220/xterm sends for F2
# The first-boot screen's two password fields start at column 25 of rows 6 and 8 on the 80x24 serial
# console; a focused field is drawn on bright cyan (SGR 106).
FIELD_ROW = {"new": 6, "again": 8}


def _raw_wait(guest, pattern: bytes, after: int, timeout: float = 120) -> int:
    """Wait for ``pattern`` in the raw serial bytes (escape sequences kept) from byte ``after``; the end
    offset of the match. Needed where only the drawing says it: which field has the focus."""
    import time

    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = rx.search(guest.serial.read_bytes(), after)
        if m:
            return m.end()
        time.sleep(0.5)
    raise AssertionError(f"not drawn within {timeout} s: {pattern!r}\n{guest.tail()}")


def _field(name: str, content: bytes) -> bytes:
    return rb"\x1b\[%d;25H(?:\x1b\[[0-9;]*m| )*" % FIELD_ROW[name] + content


@pytest.mark.timeout(1800)  # a boot under SMM firmware, then typing on serial: past 900 s on a busy machine
def test_disk_image_boots_to_console_and_healthy_node(release: Release, guest_factory) -> None:
    # Under the enforcing Secure Boot firmware trusting only the release's certificate (one boot proves both:
    # tests/e2e/test_secure_boot.py has the refusals): the kernel's stub and the booted system say it is on.
    guest = guest_factory(disk=release.disk, interactive=True, secure_boot=True)
    node = guest.wait_for(r"QUANTIX-NODE-HEALTHY version=(\S+) health=(\{.*\})", BOOT_TIMEOUT,
                          fail=rf"{BOOT_FAILED}|QUANTIX-SECURE-BOOT state=(?!enabled)\S+")
    print(f"disk image: node healthy with Secure Boot on {guest.elapsed():.0f} s after QEMU start")
    log = guest.log()
    assert secureboot.STUB_SAYS_ON in log and secureboot.REPORT_SAYS_ON in log, guest.tail()
    assert node.group(1) == release.version
    health = json.loads(node.group(2))
    assert health["status"] == "ok"
    assert health["components"]["libvirt"]["ok"] and health["components"]["data"]["ok"]
    console = guest.wait_for(r"QUANTIX-CONSOLE-READY version=(\S+) running on (.*)", 60)
    assert console.group(1) == release.version
    assert "not ready" not in console.group(2), console.group(0)
    assert "tty1" in console.group(2) and "ttyS0" in console.group(2)

    log = guest.log()
    root = _mount(log, "/")
    assert root["fstype"] == "erofs" and root["options"].split(",")[0] == "ro", root
    var = _mount(log, "/var")
    assert var["fstype"] == "ext4" and var["options"].split(",")[0] == "rw", var
    # qx-update writes the other slot's entry on the ESP: it must be mounted where qx-update looks.
    efi = _mount(log, "/efi")
    assert efi["fstype"] == "vfat", efi
    assert "quantix-a.conf" in log
    # A raw image has no root password: the console asks for one, once, before anything else. Typed on
    # the serial console as an operator does: the password, Enter (to the second field), again, Enter;
    # then F2 and that password open System Customization through the real screens. Each key that moves
    # the focus is sent alone and the next one only after the move is drawn: keys typed ahead of a focus
    # change still go to the old field (Textual moves the focus when it handles the Enter, after keys
    # already queued), which on this slow TCG guest put both passwords into the first field.
    guest.wait_for(r"This host has no root password yet", 120)
    guest.wait_for(r"F10 Set password", 60)
    stars = re.escape(b"*" * len(FIRST_PASSWORD))
    at = len(guest.serial.read_bytes())
    guest.send_keys(FIRST_PASSWORD)
    at = _raw_wait(guest, _field("new", stars), at)
    guest.send_keys("\r")
    at = _raw_wait(guest, rb"\x1b\[%d;25H\x1b\[106m" % FIELD_ROW["again"], at)
    guest.send_keys(FIRST_PASSWORD)
    at = _raw_wait(guest, _field("again", stars), at)
    offset = len(guest.log())
    guest.send_keys("\r")
    guest.wait_for(r"Root password set", 120, after=offset)
    offset = len(guest.log())
    guest.send_keys(F2)
    guest.wait_for(r"root password of this host", 120, after=offset)
    guest.send_keys(FIRST_PASSWORD + "\r")
    guest.wait_for(r"System Customization", 120, after=offset)
    print(f"disk image: first-boot password set and F2 login on serial {guest.elapsed():.0f} s after QEMU start")


def test_iso_boots_live_to_console_and_healthy_node(release: Release, guest_factory) -> None:
    guest = guest_factory(iso=release.iso, memory_mb=3072)
    node = guest.wait_for(r"QUANTIX-NODE-HEALTHY version=(\S+) health=(\{.*\})", BOOT_TIMEOUT,
                          fail=BOOT_FAILED)
    print(f"ISO: node healthy {guest.elapsed():.0f} s after QEMU start")
    assert node.group(1) == release.version
    guest.wait_for(r"QUANTIX-CONSOLE-READY version=\S+ running on .*ttyS0", 60)

