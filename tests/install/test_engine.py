"""The installer against real loop-device disks, through the real ``qx-install`` command.

Every install is inspected with the tools an operator would use on the disk: sfdisk for the table,
mtools for the (never mounted) ESP, a read-only mount of the ext4 data partition, and the slot's bytes
against the payload. Crash points (``QX_UPDATE_TEST_CRASH_AT``, shared with qx-update) kill the real
process at each step: the disk must then boot nothing (no entry) or everything, and keep its data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qx_common import hostpaths
from qx_console import shadow
from tests.install.conftest import VERSION, LoopDisk, make_payload

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
             extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    f = tmp / "answer.toml"
    f.write_text(answer)
    env = dict(os.environ)
    env.pop("QX_UPDATE_TEST_CRASH_AT", None)
    if crash:
        env["QX_UPDATE_TEST_CRASH_AT"] = crash
    return subprocess.run([QX_INSTALL, "run", "--answer", str(f), "--target", disk.path, "--payload", str(payload),
                           "--yes", "--log", str(tmp / "install.log"), *extra],
                          capture_output=True, text=True, env=env, timeout=600)


def _ok(res: subprocess.CompletedProcess[str]) -> None:
    assert res.returncode == 0, f"exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"


def _table(disk: LoopDisk) -> list[dict]:
    out = subprocess.run(["sfdisk", "--json", disk.path], capture_output=True, text=True)
    if out.returncode != 0:
        return []
    return json.loads(out.stdout)["partitiontable"]["partitions"]


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
    return [n for n in _esp_names(disk.partition(1), "loader/entries") if n.endswith(".conf")]


def test_wipe_writes_layout_slot_esp_and_configuration(tmp_path: Path, loop_disk: Callable[..., LoopDisk]) -> None:
    payload = make_payload(tmp_path / "payload")
    disk = loop_disk(300)
    res = _install(tmp_path, disk, payload, _answer())
    _ok(res)
    names = [p.get("name") for p in _table(disk)]
    assert names == ["esp", "root-a", "root-b", "quantix-data"]
    manifest = json.loads((payload / f"quantix-os_{VERSION}.manifest.json").read_text())
    root = manifest["artifacts"]["root"]
    assert _slot_sha(disk.partition(2), root["uncompressed_size"]) == root["uncompressed_sha256"]
    esp = disk.partition(1)
    assert _esp_bytes(esp, f"EFI/quantix/quantix-os_{VERSION}.efi") == (payload / f"quantix-os_{VERSION}.efi").read_bytes()
    assert _esp_bytes(esp, "EFI/BOOT/BOOTX64.EFI") == (payload / "systemd-bootx64.efi").read_bytes()
    for name in ("PK.auth", "KEK.auth", "db.auth"):   # offered by systemd-boot in setup mode, never by itself
        assert _esp_bytes(esp, f"loader/keys/auto/{name}") == (payload / "keys/auto" / name).read_bytes()
    assert "secure-boot-enroll manual" in _esp_bytes(esp, "loader/loader.conf").decode()
    assert _entries(disk) == ["quantix-a.conf"]
    entry = _esp_bytes(esp, "loader/entries/quantix-a.conf").decode()
    assert f"version {VERSION}" in entry and f"efi /EFI/quantix/quantix-os_{VERSION}.efi" in entry
    assert "options root=PARTLABEL=root-a" in entry
    with _data(disk.partition(4)) as data:
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
    with _data(disk.partition(4)) as data:
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
    assert sizes["esp"] == 512 * 1024**2
    assert sizes["root-a"] == sizes["root-b"] == 2 * 1024**3
    assert sizes["quantix-data"] > 2 * 1024**3   # the rest of the disk


def test_keep_data_keeps_the_data_partition_and_configuration(tmp_path: Path,
                                                              loop_disk: Callable[..., LoopDisk]) -> None:
    payload = make_payload(tmp_path / "payload")
    disk = loop_disk(300)
    _ok(_install(tmp_path, disk, payload, _answer(hostname="keeper")))
    with _data(disk.partition(4), rw=True) as data:
        (data / "lib/libvirt-vm.qcow2").write_bytes(b"VM DATA" * 1000)
    res = _install(tmp_path, disk, payload, _answer("keep-data"))
    _ok(res)
    with _data(disk.partition(4)) as data:
        assert (data / "lib/libvirt-vm.qcow2").read_bytes() == b"VM DATA" * 1000
        assert (data / "lib/quantix/config/hostname").read_text() == "keeper\n"
        marker = json.loads((data / "lib/quantix/install.json").read_text())
        assert marker["mode"] == "keep-data" and marker["state"] == "complete"
    assert _entries(disk) == ["quantix-a.conf"]
    # Reset the configuration while keeping the data.
    _ok(_install(tmp_path, disk, payload, _answer("keep-data", keep_config=False, hostname="renamed",
                                                  password="second-pw-2")))
    with _data(disk.partition(4)) as data:
        assert (data / "lib/libvirt-vm.qcow2").exists()
        assert (data / "lib/quantix/config/hostname").read_text() == "renamed\n"
        assert shadow.verify(data / "lib/quantix/config/shadow", "root", "second-pw-2")


def test_upgrade_writes_the_inactive_slot_with_boot_counting(tmp_path: Path,
                                                             loop_disk: Callable[..., LoopDisk]) -> None:
    old = make_payload(tmp_path / "old")
    new = make_payload(tmp_path / "new", version="0.9.2")
    disk = loop_disk(300)
    _ok(_install(tmp_path, disk, old, _answer()))
    old_root = json.loads((old / f"quantix-os_{VERSION}.manifest.json").read_text())["artifacts"]["root"]
    a_before = _slot_sha(disk.partition(2), 64 * 1024**2)
    _ok(_install(tmp_path, disk, new, _answer("upgrade")))
    new_root = json.loads((new / "quantix-os_0.9.2.manifest.json").read_text())["artifacts"]["root"]
    assert _slot_sha(disk.partition(3), new_root["uncompressed_size"]) == new_root["uncompressed_sha256"]
    assert _slot_sha(disk.partition(2), 64 * 1024**2) == a_before       # slot A untouched
    assert _slot_sha(disk.partition(2), old_root["uncompressed_size"]) == old_root["uncompressed_sha256"]
    assert sorted(_entries(disk)) == ["quantix-a.conf", "quantix-b+3.conf"]
    entry_b = _esp_bytes(disk.partition(1), "loader/entries/quantix-b+3.conf").decode()
    assert "version 0.9.2" in entry_b and "root=PARTLABEL=root-b" in entry_b
    with _data(disk.partition(4)) as data:
        st = json.loads((data / "lib/quantix/update/state.json").read_text())
        assert st["pending"]["slot"] == "b" and st["pending"]["version"] == "0.9.2"
        assert st["pending"]["from_version"] == VERSION


@pytest.mark.parametrize("point", ["install-partitioned", "write", "written", "install-entry"])
def test_a_wipe_killed_at_any_step_boots_nothing_and_a_rerun_completes(
        tmp_path: Path, loop_disk: Callable[..., LoopDisk], point: str) -> None:
    payload = make_payload(tmp_path / "payload")
    disk = loop_disk(300)
    res = _install(tmp_path, disk, payload, _answer(), crash=point)
    assert res.returncode == -9, (res.returncode, res.stderr)
    assert _entries(disk) == []    # no boot entry: the firmware boots nothing half-written
    with _data(disk.partition(4)) as data:
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
    with _data(disk.partition(4), rw=True) as data:
        (data / "lib/keep.bin").write_bytes(b"x" * 4096)
    res = _install(tmp_path, disk, payload, _answer("keep-data"), crash=point)
    assert res.returncode == -9, (res.returncode, res.stderr)
    with _data(disk.partition(4)) as data:
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
        res = _install(tmp_path, disk, payload, _answer())
    assert res.returncode == 3 and "another installation is running" in res.stderr, res.stderr
    assert _table(disk) == []


def test_install_sources_are_provenance_sources() -> None:
    from qx_console import hostconfig
    from qx_install import engine

    assert set(engine.SOURCES) <= set(hostconfig.SOURCES)
