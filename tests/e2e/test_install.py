"""Installing Quantix OS from the ISO onto a blank disk, unattended, and reinstalling it keeping the data.

One test, four QEMU boots (shared, because each TCG boot costs minutes):

1. The stock ISO as a CD + a blank 8 GiB virtio disk (serial ``qx-target``) + a small vfat volume
   labelled ``QXANSWER`` holding ``answer.toml``: the live system finds the answer, installs (wipe),
   powers off. (Whether its node gets healthy before the install ends is a race: test_boot checks
   the live system on its own.)
2. The disk alone, with two NICs: it boots to a healthy node; the serial console's status screen shows
   the host name and the static address from the answer file; the answer's network is up as the
   image's kernel and networkd made it — both NICs teamed in an active-backup bond carrying that
   address, and VLAN 10 of the team bridged for VMs (qxvlan10 in qxbr10), as the boot report prints
   them; F2 and the answer file's root password open the customization menu (typed on the serial
   line, as an operator would).
3. A file is put on the data partition (as the VMs and logs there would be). An unattended ISO made with
   ``qx-install iso`` (the answer file inside the ISO, mode ``keep-data``), plugged in as a USB stick
   written with dd and picked first in the boot order, reinstalls: the hybrid ISO boots from its GPT
   ESP, the live system finds itself as the medium by its label (never offered as a target) and the
   answer inside it; the data partition and its file are kept, slot A is rewritten, the install marker
   says so. (A stick attached as a second virtio disk lost the firmware's boot order to the installed
   disk on the lower PCI slot, which is why the stick is USB storage with a boot index.)
4. The disk boots again: healthy, and the host configuration (host name, static address) was kept.

Between boots the target disk is inspected from the test host with its own tools: sfdisk, mtools on
the unmounted ESP, a read-only mount of the ext4 data partition.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from qx_build.paths import Release
from qx_build.qemu import GUEST_NIC
from tests.e2e.conftest import BOOT_TIMEOUT
from tests.e2e.guest import SECOND_GUEST_NIC

INSTALL_TIMEOUT = 1500   # s: ISO boot (TCG, whole OS from RAM) + verify + partition + write + read-back
PASSWORD = "quantix-e2e-pw1"
HOSTNAME = "qx-e2e-1"
ADDRESS = "10.0.2.77"
VM_VLAN = 10            # a VLAN of the management team offered to VMs (bridge qxbr10 over qxvlan10)
BOOT_FAILED = r"QUANTIX-NODE-UNHEALTHY.*|Failed to start qx-(?:boot-report|node)\S*"
INSTALL_FAILED = r"QUANTIX-INSTALL-FAILED.*"
F2 = "\x1bOQ"           # what a vt220/xterm sends for F2


def _answer(mode: str, password_hash: str) -> str:
    common = f"""
[install]
mode = "{mode}"
keyboard = "de"
after = "poweroff"
[install.disk]
by_id = "virtio-qx-target"
"""
    if mode == "keep-data":
        return common.replace('[install]\n', '[install]\nkeep_config = true\n')
    return f"""hostname = "{HOSTNAME}"
[network]
nic = "{GUEST_NIC}"
extra_nics = ["{SECOND_GUEST_NIC}"]
team = "active-backup"
vm_vlans = [{VM_VLAN}]
dns = ["10.0.2.3"]
[network.ipv4]
mode = "static"
address = "{ADDRESS}"
prefix = 24
gateway = "10.0.2.2"
[network.ipv6]
mode = "off"
""" + common.replace('[install]\n', f'[install]\nroot_password_hash = "{password_hash}"\n')


def _answer_volume(path: Path, answer: str) -> None:
    """A 16 MiB vfat filesystem labelled QXANSWER holding answer.toml (no partition table: a bare volume)."""
    with path.open("wb") as f:
        f.truncate(16 * 1024 * 1024)
    subprocess.run(["mkfs.vfat", "-n", "QXANSWER", str(path)], check=True, capture_output=True)
    src = path.with_suffix(".toml")
    src.write_text(answer)
    subprocess.run(["mcopy", "-i", str(path), str(src), "::/answer.toml"], check=True,
                   env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})


@contextlib.contextmanager
def _disk(image: Path) -> Iterator[dict[str, str]]:
    """The target disk image on a loop device: partition nodes by GPT name."""
    dev = subprocess.run(["losetup", "-fP", "--show", str(image)], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        subprocess.run(["partx", "--update", dev], check=False, capture_output=True)
        table = json.loads(subprocess.run(["sfdisk", "--json", dev], check=True, capture_output=True,
                                          text=True).stdout)["partitiontable"]
        parts = {p["name"]: p["node"] for p in table["partitions"]}
        yield parts
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


@contextlib.contextmanager
def _mounted(dev: str, *, ro: bool) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as mnt:
        subprocess.run(["mount", "-t", "ext4", "-o", "ro,noload" if ro else "rw", dev, mnt], check=True)
        try:
            yield Path(mnt)
        finally:
            subprocess.run(["umount", mnt], check=True)


def _esp_text(dev: str, path: str) -> str:
    return subprocess.run(["mtype", "-i", dev, f"::/{path}"], check=True, capture_output=True, text=True,
                          env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout


def _esp_list(dev: str, path: str) -> list[str]:
    out = subprocess.run(["mdir", "-i", dev, "-b", f"::/{path}"], check=True, capture_output=True, text=True,
                         env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout
    return sorted(Path(line.strip()).name for line in out.splitlines() if line.strip())


def _assert_team_and_vm_vlan_up(guest) -> None:  # type: ignore[no-untyped-def]
    """The answer's network, brought up by the image's kernel and systemd-networkd (the test host's kernel
    has neither bonding nor 8021q): what the boot report prints once the node is healthy."""
    def line(pattern: str) -> None:
        guest.wait_for(r"(?m)^\s*" + pattern, 120)

    line(r"/proc/net/bonding/qxbond0:Bonding Mode: fault-tolerance \(active-backup\)")
    line(rf"/proc/net/bonding/qxbond0:Currently Active Slave: {GUEST_NIC}")   # the management adapter
    line(rf"/proc/net/bonding/qxbond0:Slave Interface: {SECOND_GUEST_NIC}")
    line(rf"qxvlan{VM_VLAN}\s+\|\s+{VM_VLAN}\s+\|\s+qxbond0")                # /proc/net/vlan/config
    line(r"\d+\s+qxbond0\s+bond\s+routable\s+configured")                   # networkctl list
    line(rf"\d+\s+qxvlan{VM_VLAN}\s+vlan\s+\S+\s+configured")
    line(rf"\d+\s+qxbr{VM_VLAN}\s+bridge\s+\S+\s+configured")
    line(rf"qxbond0\s+UP\s+{re.escape(ADDRESS)}/24")                             # ip -brief -4 address


def _boot_installed(guest_factory, target: Path, release: Release):  # type: ignore[no-untyped-def]
    guest = guest_factory(drives=[(target, "raw", "qx-target")], interactive=True, second_nic=True)
    node = guest.wait_for(r"QUANTIX-NODE-HEALTHY version=(\S+) health=(\{.*\})", BOOT_TIMEOUT, fail=BOOT_FAILED)
    assert node.group(1) == release.version
    assert json.loads(node.group(2))["status"] == "ok", node.group(0)
    # The status screen on the serial console: the answer file's host name and static address.
    guest.wait_for(re.escape(HOSTNAME), 120)
    guest.wait_for(re.escape(f"https://{ADDRESS}:8443/"), 120)
    _assert_team_and_vm_vlan_up(guest)
    return guest


@pytest.mark.timeout(3600)  # four TCG boots: past the suite's 900 s per test on a busy machine
def test_unattended_install_then_reinstall_keeping_data(release: Release, guest_factory, tmp_path: Path) -> None:
    target = tmp_path / "target.raw"
    with target.open("wb") as f:
        f.truncate(8 * 1024**3)
    pw_hash = subprocess.run(["openssl", "passwd", "-6", PASSWORD], check=True, capture_output=True,
                             text=True).stdout.strip()

    # 1. Unattended install from the stock ISO, the answer on a QXANSWER volume.
    vol = tmp_path / "answer.img"
    _answer_volume(vol, _answer("wipe", pw_hash))
    iso = guest_factory(iso=release.iso, memory_mb=3072,
                        drives=[(target, "raw", "qx-target"), (vol, "raw", "qx-answer")])
    done = iso.wait_for(r"QUANTIX-INSTALL-DONE version=(\S+) disk=(\S+) slot=a after=poweroff(.*)", INSTALL_TIMEOUT,
                        fail=INSTALL_FAILED)
    print(f"install: done {iso.elapsed():.0f} s after QEMU start ({done.group(3).strip()})")
    assert done.group(1) == release.version
    assert iso.wait_exit(300) == 0
    assert "QUANTIX-INSTALL-ANSWER source=" in iso.log()

    with _disk(target) as parts:
        assert list(parts) == ["esp", "root-a", "root-a-verity", "root-b", "root-b-verity", "quantix-data"], parts
        assert _esp_list(parts["esp"], "loader/entries") == ["quantix-a.conf"]
        entry = _esp_text(parts["esp"], "loader/entries/quantix-a.conf")
        roothash = json.loads(release.manifest.read_text())["artifacts"]["root"]["verity"]["roothash"]
        assert f"version {release.version}" in entry and f"roothash={roothash}" in entry.split()
        # Slot A is sealed: its tree verifies the installed root against the UKI's root hash.
        subprocess.run(["veritysetup", "verify", parts["root-a"], parts["root-a-verity"], roothash],
                       check=True, capture_output=True)
        with _mounted(parts["quantix-data"], ro=True) as data:
            marker = json.loads((data / "lib/quantix/install.json").read_text())
            assert marker["state"] == "complete" and marker["mode"] == "wipe" and marker["source"] == "answer-file"
            prov = json.loads((data / "lib/quantix/config/provenance.json").read_text())
            assert prov["hostname"] == "answer-file", prov
            assert (data / "lib/quantix/config/vconsole.conf").read_text() == "KEYMAP=de\n"
            shadow_lines = (data / "lib/quantix/config/shadow").read_text().splitlines()
            assert any(line.startswith(f"root:{pw_hash}:") for line in shadow_lines)

    # 2. The installed disk boots; the answer file's password opens F2 on the serial console.
    host = _boot_installed(guest_factory, target, release)
    offset = len(host.log())
    host.send_keys(F2)
    host.wait_for(r"root password of this host", 120, after=offset)
    host.send_keys(PASSWORD + "\r")
    host.wait_for(r"System Customization", 120, after=offset)
    print(f"installed host: healthy, console logged in {host.elapsed():.0f} s after QEMU start")
    host.stop()   # a power cut while running: the reinstall below must cope with it

    # 3. Data on the data partition; reinstall keeping it, from an ISO that carries the answer itself.
    with _disk(target) as parts, _mounted(parts["quantix-data"], ro=False) as data:
        (data / "lib/quantix/e2e-keep.txt").write_text("a VM's disk would be here\n")
    answer2 = tmp_path / "keep.toml"
    answer2.write_text(_answer("keep-data", pw_hash))
    unattended = tmp_path / "unattended.iso"
    qx_install = Path(os.environ.get("VIRTUAL_ENV", ".venv")) / "bin/qx-install"
    subprocess.run([str(qx_install if qx_install.exists() else "qx-install"), "validate", str(answer2)], check=True)
    subprocess.run([str(qx_install if qx_install.exists() else "qx-install"), "iso", "--answer", str(answer2),
                    "--out", str(unattended), str(release.iso)], check=True)
    iso2 = guest_factory(usb=unattended, memory_mb=3072, drives=[(target, "raw", "qx-target")])
    iso2.wait_for(r"QUANTIX-INSTALL-DONE version=\S+ disk=\S+ slot=a after=poweroff", INSTALL_TIMEOUT,
                  fail=INSTALL_FAILED)
    assert "source=medium" in iso2.log() or "answer.toml" in iso2.log()
    assert iso2.wait_exit(300) == 0
    with _disk(target) as parts, _mounted(parts["quantix-data"], ro=True) as data:
        assert (data / "lib/quantix/e2e-keep.txt").read_text() == "a VM's disk would be here\n"
        marker = json.loads((data / "lib/quantix/install.json").read_text())
        assert marker["state"] == "complete" and marker["mode"] == "keep-data", marker
        assert _esp_list(parts["esp"], "loader/entries") == ["quantix-a.conf"]

    # 4. It boots again with its configuration kept.
    again = _boot_installed(guest_factory, target, release)
    print(f"reinstalled host: healthy {again.elapsed():.0f} s after QEMU start")
