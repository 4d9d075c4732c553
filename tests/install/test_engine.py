"""The installer against real loop-device disks, through the real ``qx-install`` command.

Every install is inspected with the tools an operator would use on the disk: sfdisk for the table,
mtools for the (never mounted) ESP, a read-only mount of the ext4 data partition, and the slot's bytes
against the payload; a dm-verity slot with cryptsetup's own ``veritysetup verify`` (userspace: no
device-mapper needed) and its partition UUIDs against the root hash. Crash points
(``QX_UPDATE_TEST_CRASH_AT``, shared with qx-update) kill the real process at each step: the disk must
then boot nothing (no entry) or everything, and keep its data. Partitions are found by their GPT names, as
the installer finds them (numbers differ between the layouts before and with dm-verity).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qx_common import hostpaths, verity
from qx_console import shadow
from tests.install.conftest import VERSION, LoopDisk, make_payload, roothash_of_root

pytestmark = pytest.mark.root

QX_INSTALL = str(Path(sys.executable).parent / "qx-install")
MTOOLS = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def _answer(mode: str = "wipe", *, hostname: str = "host-one", keep_config: bool = True,
            password: str | None = "install-pw-1") -> str:
    text = ""
    if mode == "wipe" or not keep_config:
        text += f'hostname = "{hostname}"\n'
    text += f'[install]\nmode = "{mode}"\nkeyboard = "fr"\nafter = "none"\n'
    if mode == "keep-data":
        text += f"keep_config = {'true' if keep_config else 'false'}\n"
    if password and (mode == "wipe" or not keep_config):
        text += f'root_password_hash = "{shadow.hash_password(password)}"\n'
    text += '[install.disk]\ntransport = "loop"\n'
    return text


def _install(tmp: Path, disk: LoopDisk, payload: Path, answer: str, *, crash: str | None = None,
             extra: tuple[str, ...] = (), wait_lock: bool = True) -> subprocess.CompletedProcess[str]:
    """``qx-install run`` with ``answer``. ``wait_lock``: while another install on this machine holds the
    installer's lock (a parallel test worker: the lock is machine-wide), wait and run again."""
    f = tmp / "answer.toml"
    f.write_text(answer)
    env = dict(os.environ)
    env.pop("QX_UPDATE_TEST_CRASH_AT", None)
    if crash:
        env["QX_UPDATE_TEST_CRASH_AT"] = crash
    deadline = time.monotonic() + 300
    while True:
        res = subprocess.run([QX_INSTALL, "run", "--answer", str(f), "--target", disk.path, "--payload",
                              str(payload), "--yes", "--log", str(tmp / "install.log"), *extra],
                             capture_output=True, text=True, env=env, timeout=600)
        if not (wait_lock and res.returncode == 3 and "another installation is running" in res.stderr) \
                or time.monotonic() > deadline:
            return res
        time.sleep(random.uniform(0.2, 1.0))


def _ok(res: subprocess.CompletedProcess[str]) -> None:
    assert res.returncode == 0, f"exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"


def _table(disk: LoopDisk) -> list[dict]:
    out = subprocess.run(["sfdisk", "--json", disk.path], capture_output=True, text=True)
    if out.returncode != 0:
        return []
    return json.loads(out.stdout)["partitiontable"]["partitions"]


def _part(disk: LoopDisk, label: str) -> str:
    """The device node of ``disk``'s partition named ``label``."""
    nodes = [p["node"] for p in _table(disk) if p.get("name") == label]
    assert len(nodes) == 1, (label, _table(disk))
    return nodes[0]


def _esp(disk: LoopDisk) -> str:
    return _part(disk, "esp")


def _data_dev(disk: LoopDisk) -> str:
    return _part(disk, "quantix-data")


def _esp_names(dev: str, path: str) -> list[str]:
    out = subprocess.run(["mdir", "-i", dev, "-b", "-a", f"::/{path}"], capture_output=True, text=True, env=MTOOLS)
    return sorted(Path(x.strip()).name for x in out.stdout.splitlines() if x.strip()) if out.returncode == 0 else []


def _esp_bytes(dev: str, path: str) -> bytes:
    return subprocess.run(["mtype", "-i", dev, f"::/{path}"], capture_output=True, check=True, env=MTOOLS).stdout


@contextlib.contextmanager
def _data(dev: str, *, rw: bool = False) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as mnt:
        subprocess.run(["mount", "-t", "ext4", "-o", "rw" if rw else "ro,noload", dev, mnt], check=True)
        try:
            yield Path(mnt)
        finally:
            subprocess.run(["umount", mnt], check=True)


def _slot_sha(dev: str, length: int) -> str:
    with open(dev, "rb") as f:
        return hashlib.sha256(f.read(length)).hexdigest()


def _entries(disk: LoopDisk) -> list[str]:
    return [n for n in _esp_names(_esp(disk), "loader/entries") if n.endswith(".conf")]


def _options(disk: LoopDisk, entry: str) -> str:
    lines = _esp_bytes(_esp(disk), f"loader/entries/{entry}").decode().splitlines()
    return next(line.removeprefix("options ") for line in lines if line.startswith("options "))


def _assert_sealed(disk: LoopDisk, slot: str, roothash: str) -> None:
    """Slot ``slot`` boots ``roothash``: cryptsetup accepts its tree, its UUIDs are the ones the hash names."""
    data, tree = _part(disk, f"root-{slot}"), _part(disk, f"root-{slot}-verity")
    res = subprocess.run(["veritysetup", "verify", data, tree, roothash], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    uuids = {p["name"]: p["uuid"].lower() for p in _table(disk)}
    assert (uuids[f"root-{slot}"], uuids[f"root-{slot}-verity"]) == verity.partuuids(roothash)


def _root_info(payload: Path, version: str = VERSION) -> dict:
    return json.loads((payload / f"quantix-os_{version}.manifest.json").read_text())["artifacts"]["root"]


def _uki_cmdline(payload: Path, version: str = VERSION) -> str:
    from qx_update import secureboot

    cmdline = secureboot.uki_cmdline(payload / f"quantix-os_{version}.efi")
    assert cmdline
    return cmdline


def roothash_of_root_payload(payload: Path, version: str = VERSION) -> str:
    """The root hash of the payload's root (decompressed), as the image build seals it."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "root.erofs"
        subprocess.run(["zstd", "-dq", str(payload / f"quantix-os_{version}.root.erofs.zst"), "-o", str(raw)],
                       check=True)
        return roothash_of_root(raw)


LAYOUT = ["esp", "root-a", "root-a-verity", "root-b", "root-b-verity", "quantix-data"]
OLD_LAYOUT = ["esp", "root-a", "root-b", "quantix-data"]


def test_wipe_writes_layout_slot_esp_and_configuration(tmp_path: Path, loop_disk: Callable[..., LoopDisk]) -> None:
    payload = make_payload(tmp_path / "payload")
    disk = loop_disk(300)
    res = _install(tmp_path, disk, payload, _answer())
    _ok(res)
    names = [p.get("name") for p in _table(disk)]
    assert names == LAYOUT
    root = _root_info(payload)
    assert _slot_sha(_part(disk, "root-a"), root["uncompressed_size"]) == root["uncompressed_sha256"]
    esp = _esp(disk)
    assert _esp_bytes(esp, f"EFI/quantix/quantix-os_{VERSION}.efi") == (payload / f"quantix-os_{VERSION}.efi").read_bytes()
    assert _esp_bytes(esp, "EFI/BOOT/BOOTX64.EFI") == (payload / "systemd-bootx64.efi").read_bytes()
    for name in ("PK.auth", "KEK.auth", "db.auth"):   # offered by systemd-boot in setup mode, never by itself
        assert _esp_bytes(esp, f"loader/keys/auto/{name}") == (payload / "keys/auto" / name).read_bytes()
    assert "secure-boot-enroll manual" in _esp_bytes(esp, "loader/loader.conf").decode()
    assert _entries(disk) == ["quantix-a.conf"]
    entry = _esp_bytes(esp, "loader/entries/quantix-a.conf").decode()
    assert f"version {VERSION}" in entry and f"efi /EFI/quantix/quantix-os_{VERSION}.efi" in entry
    assert "options root=PARTLABEL=root-a" in entry     # a release before dm-verity: nothing sealed
    assert "seal root slot" not in res.stderr
    with _data(_data_dev(disk)) as data:
        cfg = data / "lib/quantix/config"
        assert json.loads((cfg / "hostconfig.json").read_text())["hostname"] == "host-one"
        assert (cfg / "hostname").read_text() == "host-one\n"
        assert json.loads((cfg / "provenance.json").read_text())["hostname"] == "answer-file"
        assert (cfg / "vconsole.conf").read_text() == "KEYMAP=fr\n"
        assert shadow.verify(cfg / "shadow", "root", "install-pw-1")
        assert json.loads((data / "lib/quantix/install.json").read_text())["state"] == "complete"
        assert (data / "log").is_dir()  # the factory tree is there
        assert not (cfg / hostpaths.LOCKDOWN_NAME).exists()
    assert "installed Quantix OS" in res.stdout


def test_an_answer_files_lockdown_leaves_a_host_that_boots_locked_down(
        tmp_path: Path, loop_disk: Callable[..., LoopDisk]) -> None:
    # The config field only records the choice; the file is what SSH's drop-in and qx-node obey.
    payload = make_payload(tmp_path / "payload")
    disk = loop_disk(300)
    _ok(_install(tmp_path, disk, payload, "lockdown = true\n" + _answer()))
    with _data(_data_dev(disk)) as data:
        cfg = data / "lib/quantix/config"
        assert json.loads((cfg / "hostconfig.json").read_text())["lockdown"] is True
        assert (cfg / hostpaths.LOCKDOWN_NAME).is_file()
        assert Path("/var") / (cfg / hostpaths.LOCKDOWN_NAME).relative_to(data) == hostpaths.lockdown_file()


def test_the_image_partition_definitions_and_a_disk_too_small(tmp_path: Path,
                                                             loop_disk: Callable[..., LoopDisk]) -> None:
    payload = make_payload(tmp_path / "payload", small=False)
    small = loop_disk(5 * 1024, name="small")
    res = _install(tmp_path, small, payload, _answer())
    assert res.returncode == 2, res.stderr
    assert "Quantix needs at least" in res.stderr and "choose a larger disk" in res.stderr
    assert _table(small) == []  # nothing written
    with open(small.path, "rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20)
    big = loop_disk(7 * 1024, name="big")
    _ok(_install(tmp_path, big, payload, _answer()))
    sizes = {p["name"]: p["size"] * 512 for p in _table(big)}
    assert list(sizes) == LAYOUT
    assert sizes["esp"] == 512 * 1024**2
    assert sizes["root-a"] == sizes["root-b"] == 2016 * 1024**2
    assert sizes["root-a-verity"] == sizes["root-b-verity"] == 32 * 1024**2
    # A slot and its verity partition take the 2 GiB one slot took before: an older disk converts in place.
    assert sizes["root-a"] + sizes["root-a-verity"] == 2 * 1024**3
    assert sizes["quantix-data"] > 2 * 1024**3   # the rest of the disk


def test_keep_data_keeps_the_data_partition_and_configuration(tmp_path: Path,
                                                              loop_disk: Callable[..., LoopDisk]) -> None:
    payload = make_payload(tmp_path / "payload")
    disk = loop_disk(300)
    _ok(_install(tmp_path, disk, payload, _answer(hostname="keeper")))
    with _data(_data_dev(disk), rw=True) as data:
        (data / "lib/libvirt-vm.qcow2").write_bytes(b"VM DATA" * 1000)
    table = _table(disk)
    res = _install(tmp_path, disk, payload, _answer("keep-data"))
    _ok(res)
    assert "convert partition table" not in res.stderr
    assert [(p["name"], p["start"], p["size"]) for p in _table(disk)] == \
        [(p["name"], p["start"], p["size"]) for p in table]                  # no conversion: the table as it was
    with _data(_data_dev(disk)) as data:
        assert (data / "lib/libvirt-vm.qcow2").read_bytes() == b"VM DATA" * 1000
        assert (data / "lib/quantix/config/hostname").read_text() == "keeper\n"
        marker = json.loads((data / "lib/quantix/install.json").read_text())
        assert marker["mode"] == "keep-data" and marker["state"] == "complete"
    assert _entries(disk) == ["quantix-a.conf"]
    # Reset the configuration while keeping the data.
    _ok(_install(tmp_path, disk, payload, _answer("keep-data", keep_config=False, hostname="renamed",
                                                  password="second-pw-2")))
    with _data(_data_dev(disk)) as data:
        assert (data / "lib/libvirt-vm.qcow2").exists()
        assert (data / "lib/quantix/config/hostname").read_text() == "renamed\n"
        assert shadow.verify(data / "lib/quantix/config/shadow", "root", "second-pw-2")


def test_upgrade_writes_the_inactive_slot_with_boot_counting(tmp_path: Path,
                                                             loop_disk: Callable[..., LoopDisk]) -> None:
    old = make_payload(tmp_path / "old")
    new = make_payload(tmp_path / "new", version="0.9.2")
    disk = loop_disk(300)
    _ok(_install(tmp_path, disk, old, _answer()))
    old_root = _root_info(old)
    a_before = _slot_sha(_part(disk, "root-a"), 56 * 1024**2)
    _ok(_install(tmp_path, disk, new, _answer("upgrade")))
    new_root = _root_info(new, "0.9.2")
    assert _slot_sha(_part(disk, "root-b"), new_root["uncompressed_size"]) == new_root["uncompressed_sha256"]
    assert _slot_sha(_part(disk, "root-a"), 56 * 1024**2) == a_before       # slot A untouched
    assert _slot_sha(_part(disk, "root-a"), old_root["uncompressed_size"]) == old_root["uncompressed_sha256"]
    assert sorted(_entries(disk)) == ["quantix-a.conf", "quantix-b+3.conf"]
    entry_b = _esp_bytes(_esp(disk), "loader/entries/quantix-b+3.conf").decode()
    assert "version 0.9.2" in entry_b and "root=PARTLABEL=root-b" in entry_b
    with _data(_data_dev(disk)) as data:
        st = json.loads((data / "lib/quantix/update/state.json").read_text())
        assert st["pending"]["slot"] == "b" and st["pending"]["version"] == "0.9.2"
        assert st["pending"]["from_version"] == VERSION


def test_wipe_of_a_verity_release_seals_slot_a_before_its_entry(tmp_path: Path,
                                                               loop_disk: Callable[..., LoopDisk]) -> None:
    payload = make_payload(tmp_path / "payload", verity=True)
    disk = loop_disk(300)
    res = _install(tmp_path, disk, payload, _answer())
    _ok(res)
    roothash = roothash_of_root_payload(payload)
    assert [p.get("name") for p in _table(disk)] == LAYOUT
    _assert_sealed(disk, "a", roothash)
    # The entry boots what the signed UKI boots: its own command line, unchanged (no root=PARTLABEL=).
    assert _options(disk, "quantix-a.conf") == _uki_cmdline(payload)
    assert f"roothash={roothash}" in _uki_cmdline(payload)
    # The operator sees the step; the log has it between the slot write and the boot loader.
    assert "] seal root slot" in res.stderr and "(dm-verity)" in res.stderr
    steps = [line.split("step ", 1)[1] for line in (tmp_path / "install.log").read_text().splitlines()
             if " step " in line]
    assert steps == ["1/7: verify medium", "2/7: prepare", "3/7: partition disk", "4/7: write root slot",
                     "5/7: seal root slot", "6/7: install boot loader", "7/7: finish"]


def test_a_uki_whose_root_hash_is_not_its_roots_is_refused_before_any_entry(
        tmp_path: Path, loop_disk: Callable[..., LoopDisk]) -> None:
    wrong = "ab" * 32
    payload = make_payload(tmp_path / "payload", verity=True, roothash=wrong)
    disk = loop_disk(300)
    res = _install(tmp_path, disk, payload, _answer())
    assert res.returncode == 5, res.stderr       # a VerificationError: the medium holds a broken release
    assert "seal root slot" in res.stderr and f"the release's UKI boots {wrong}" in res.stderr
    assert "do not belong together" in res.stderr   # the hint
    assert _entries(disk) == []                  # nothing boots the unsealed slot
    uuids = {p["name"]: p["uuid"].lower() for p in _table(disk)}
    assert verity.partuuids(wrong)[0] != uuids["root-a"] and verity.partuuids(wrong)[1] != uuids["root-a-verity"]
    with _data(_data_dev(disk)) as data:
        assert json.loads((data / "lib/quantix/install.json").read_text())["state"] == "installing"
    # A keep-data reinstall with it fails the same way: the disk boots nothing rather than an unsealed slot.
    good = make_payload(tmp_path / "good", verity=True)
    _ok(_install(tmp_path, disk, good, _answer()))
    res = _install(tmp_path, disk, payload, _answer("keep-data"))
    assert res.returncode == 5 and f"the release's UKI boots {wrong}" in res.stderr, res.stderr
    assert _entries(disk) == []


def test_keep_data_converts_a_disk_installed_before_verity(tmp_path: Path,
                                                            loop_disk: Callable[..., LoopDisk]) -> None:
    old = make_payload(tmp_path / "old", old_layout=True)
    new = make_payload(tmp_path / "new", version="0.9.2", verity=True)
    disk = loop_disk(300)
    _ok(_install(tmp_path, disk, old, _answer(hostname="old-host")))
    assert [p.get("name") for p in _table(disk)] == OLD_LAYOUT
    with _data(_data_dev(disk), rw=True) as data:
        (data / "lib/libvirt-vm.qcow2").write_bytes(b"VM DATA" * 5000)
    before = {p["name"]: p for p in _table(disk)}
    # An upgrade cannot take a verity release onto this disk: refused before anything is written.
    res = _install(tmp_path, disk, new, _answer("upgrade"))
    assert res.returncode == 2 and "no partition root-b-verity" in res.stderr and "keep-data" in res.stderr, res.stderr
    assert _table(disk) == list(before.values())
    res = _install(tmp_path, disk, new, _answer("keep-data"))
    _ok(res)
    assert "New partition table: esp, root-a, root-a-verity" in res.stderr   # the confirm summary says so
    assert "] convert partition table" in res.stderr and "] seal root slot" in res.stderr
    after = {p["name"]: p for p in _table(disk)}
    assert list(after) == LAYOUT
    # The ESP and the data partition keep their entries: place, size, type, UUID.
    for name in ("esp", "quantix-data"):
        assert {k: v for k, v in after[name].items() if k != "node"} == \
            {k: v for k, v in before[name].items() if k != "node"}, name
    assert after["root-a"]["start"] == before["root-a"]["start"]
    assert after["root-b-verity"]["start"] + after["root-b-verity"]["size"] == before["quantix-data"]["start"]
    roothash = roothash_of_root_payload(new, "0.9.2")
    _assert_sealed(disk, "a", roothash)
    assert _entries(disk) == ["quantix-a.conf"]
    assert _options(disk, "quantix-a.conf") == _uki_cmdline(new, "0.9.2")
    with _data(_data_dev(disk)) as data:
        assert (data / "lib/libvirt-vm.qcow2").read_bytes() == b"VM DATA" * 5000
        assert (data / "lib/quantix/config/hostname").read_text() == "old-host\n"
        assert json.loads((data / "lib/quantix/install.json").read_text())["state"] == "complete"
    assert subprocess.run(["e2fsck", "-fn", _data_dev(disk)], capture_output=True).returncode == 0
    # The converted table is the one a wipe makes on a disk of this size (types, flags, places).
    fresh = loop_disk(300, name="fresh")
    _ok(_install(tmp_path, fresh, new, _answer()))

    def geometry(d: LoopDisk) -> list[tuple]:
        return [(p["name"], p["start"], p["size"], p["type"], p.get("attrs")) for p in _table(d)]

    assert geometry(disk) == geometry(fresh)
    # Now an upgrade works on it, and seals slot B.
    newer = make_payload(tmp_path / "newer", version="0.9.3", verity=True)
    _ok(_install(tmp_path, disk, newer, _answer("upgrade")))
    _assert_sealed(disk, "b", roothash_of_root_payload(newer, "0.9.3"))
    _assert_sealed(disk, "a", roothash)
    assert _options(disk, "quantix-b+3.conf") == _uki_cmdline(newer, "0.9.3")


def test_a_medium_whose_root_is_not_whole_4k_blocks_is_refused_as_a_broken_medium(
        tmp_path: Path, loop_disk: Callable[..., LoopDisk]) -> None:
    """A dm-verity medium whose manifest gives the root a size that is no whole number of 4 KiB blocks
    (no hash tree covers it): refused as a broken medium (exit 2, the field and the fix), not an
    internal error, before the disk is touched."""
    payload = make_payload(tmp_path / "payload", verity=True)
    mf = payload / f"quantix-os_{VERSION}.manifest.json"
    manifest = json.loads(mf.read_text())
    manifest["artifacts"]["root"]["uncompressed_size"] -= 1
    mf.write_text(json.dumps(manifest))
    disk = loop_disk(300)
    before = _table(disk)
    res = _install(tmp_path, disk, payload, _answer())
    assert res.returncode == 2, res.stderr
    assert "installation medium" in res.stderr and "multiple of 4096" in res.stderr, res.stderr
    assert "internal error" not in res.stderr
    assert _table(disk) == before


def test_an_upgrade_to_the_release_the_other_slot_holds_is_refused_before_anything_is_written(
        tmp_path: Path, loop_disk: Callable[..., LoopDisk]) -> None:
    """One release in both slots would give two partitions of the disk the UUIDs its root hash names: the
    initrd (udev's by-partuuid link: whichever partition came last) and qx_common.slot.booted_slot could
    then take either slot for the other — slot B's entry could boot slot A, and qx-update, believing A the
    running slot, would refuse every later update as writing it. Refused, with nothing written."""
    payload = make_payload(tmp_path / "payload", verity=True)
    disk = loop_disk(300)
    _ok(_install(tmp_path, disk, payload, _answer()))
    roothash = roothash_of_root_payload(payload)
    before = (_table(disk), _entries(disk), _slot_sha(_part(disk, "root-b"), 56 * 1024**2))
    res = _install(tmp_path, disk, payload, _answer("upgrade"))
    assert res.returncode == 3, res.stderr
    assert "root-a already carries" in res.stderr and "keep-data" in res.stderr, res.stderr
    assert (_table(disk), _entries(disk), _slot_sha(_part(disk, "root-b"), 56 * 1024**2)) == before
    uuids = [p["uuid"].lower() for p in _table(disk)]
    assert all(uuids.count(u) == 1 for u in verity.partuuids(roothash))
    _assert_sealed(disk, "a", roothash)


@pytest.mark.parametrize("point", ["install-retired", "install-converted", "written", "install-sealed"])
def test_a_converting_keep_data_killed_at_any_step_keeps_the_data(
        tmp_path: Path, loop_disk: Callable[..., LoopDisk], point: str) -> None:
    old = make_payload(tmp_path / "old", old_layout=True)
    new = make_payload(tmp_path / "new", version="0.9.2", verity=True)
    disk = loop_disk(300)
    _ok(_install(tmp_path, disk, old, _answer()))
    with _data(_data_dev(disk), rw=True) as data:
        (data / "lib/keep.bin").write_bytes(b"k" * 8192)
    res = _install(tmp_path, disk, new, _answer("keep-data"), crash=point)
    assert res.returncode == -9, (res.returncode, res.stderr)
    assert _entries(disk) == []
    with _data(_data_dev(disk)) as data:
        assert (data / "lib/keep.bin").read_bytes() == b"k" * 8192
    _ok(_install(tmp_path, disk, new, _answer("keep-data")))
    assert [p.get("name") for p in _table(disk)] == LAYOUT
    _assert_sealed(disk, "a", roothash_of_root_payload(new, "0.9.2"))
    with _data(_data_dev(disk)) as data:
        assert (data / "lib/keep.bin").read_bytes() == b"k" * 8192


@pytest.mark.parametrize("point", ["install-partitioned", "write", "written", "install-entry"])
def test_a_wipe_killed_at_any_step_boots_nothing_and_a_rerun_completes(
        tmp_path: Path, loop_disk: Callable[..., LoopDisk], point: str) -> None:
    payload = make_payload(tmp_path / "payload")
    disk = loop_disk(300)
    res = _install(tmp_path, disk, payload, _answer(), crash=point)
    assert res.returncode == -9, (res.returncode, res.stderr)
    assert _entries(disk) == []    # no boot entry: the firmware boots nothing half-written
    with _data(_data_dev(disk)) as data:
        assert json.loads((data / "lib/quantix/install.json").read_text())["state"] == "installing"
    _ok(_install(tmp_path, disk, payload, _answer()))
    assert _entries(disk) == ["quantix-a.conf"]


@pytest.mark.parametrize("point", ["install-retired", "write", "install-configured", "install-entry",
                                   "install-entered"])
def test_a_keep_data_reinstall_killed_at_any_step_keeps_the_data(
        tmp_path: Path, loop_disk: Callable[..., LoopDisk], point: str) -> None:
    payload = make_payload(tmp_path / "payload")
    disk = loop_disk(300)
    _ok(_install(tmp_path, disk, payload, _answer()))
    with _data(_data_dev(disk), rw=True) as data:
        (data / "lib/keep.bin").write_bytes(b"x" * 4096)
    res = _install(tmp_path, disk, payload, _answer("keep-data"), crash=point)
    assert res.returncode == -9, (res.returncode, res.stderr)
    with _data(_data_dev(disk)) as data:
        assert (data / "lib/keep.bin").read_bytes() == b"x" * 4096
        state = json.loads((data / "lib/quantix/install.json").read_text())["state"]
    if point == "install-entered":
        assert _entries(disk) == ["quantix-a.conf"]   # everything written: bootable
    else:
        assert _entries(disk) == [] and state == "installing"
    _ok(_install(tmp_path, disk, payload, _answer("keep-data")))
    assert _entries(disk) == ["quantix-a.conf"]


def test_bad_input_is_refused_before_anything_is_written(tmp_path: Path, loop_disk: Callable[..., LoopDisk]) -> None:
    payload = make_payload(tmp_path / "payload")
    disk = loop_disk(300)
    bad = _answer().replace('keyboard = "fr"', 'keyboard = "xx"\ncolour = "blue"')
    res = _install(tmp_path, disk, payload, bad)
    assert res.returncode == 2
    assert "install.keyboard" in res.stderr and "install.colour" in res.stderr
    # A partition is not a disk; a keep-data reinstall of a disk without Quantix is refused.
    subprocess.run(["sfdisk", "-q", disk.path], input="label: gpt\nsize=8MiB\n", text=True, check=True)
    subprocess.run(["partx", "--update", disk.path], check=False)
    res = subprocess.run([QX_INSTALL, "run", "--target", disk.partition(1), "--payload", str(payload), "--yes"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "not a whole disk" in res.stderr
    res = _install(tmp_path, disk, payload, _answer("keep-data"))
    assert res.returncode == 2 and "no Quantix OS install" in res.stderr
    assert [p.get("name", "") for p in _table(disk)] == [""]   # the old table is untouched
    # Without --yes and without a terminal nothing is written.
    res = subprocess.run([QX_INSTALL, "run", "--target", disk.path, "--payload", str(payload)],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert res.returncode == 2 and "--yes" in res.stderr
    assert [p.get("name", "") for p in _table(disk)] == [""]


def test_a_damaged_payload_is_refused_before_the_disk_is_touched(tmp_path: Path,
                                                                 loop_disk: Callable[..., LoopDisk]) -> None:
    payload = make_payload(tmp_path / "payload")
    uki = payload / f"quantix-os_{VERSION}.efi"
    uki.write_bytes(uki.read_bytes()[:-1] + b"!")
    disk = loop_disk(300)
    res = _install(tmp_path, disk, payload, _answer())
    assert res.returncode == 2, res.stderr
    assert "does not match its SHA256SUMS entry" in res.stderr and "verify medium" in res.stderr
    assert _table(disk) == []


def test_a_second_install_while_one_runs_is_refused(tmp_path: Path, loop_disk: Callable[..., LoopDisk]) -> None:
    import fcntl

    from qx_install import engine

    payload = make_payload(tmp_path / "payload")
    disk = loop_disk(300)
    engine.LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(engine.LOCK_FILE, "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)   # as a running install (tty1, serial or unattended) holds it
        res = _install(tmp_path, disk, payload, _answer(), wait_lock=False)
    assert res.returncode == 3 and "another installation is running" in res.stderr, res.stderr
    assert _table(disk) == []


def test_install_sources_are_provenance_sources() -> None:
    from qx_console import hostconfig
    from qx_install import engine

    assert set(engine.SOURCES) <= set(hostconfig.SOURCES)
