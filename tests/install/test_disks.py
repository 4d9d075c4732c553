"""Disks: listing, an existing Quantix install, the boot medium, and choosing a disk by a filter.

The listing and existing-install tests run against real loop devices holding real GPT tables (sfdisk),
a vfat ESP with real boot entries and an ext4 data partition (marker ``root``). They never depend on
``/dev/disk/by-id``: this machine may have no udev, and the code must then fall back to kernel paths.
The filter tests build :class:`Disk` values directly (plain data, no I/O) to cover every rule.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from qx_common.errors import UserError
from qx_install import disks
from qx_install.answer import DiskFilter
from qx_install.disks import Disk, ExistingInstall
from qx_update import bootentry

MiB = 1024 * 1024
QUANTIX_TABLE = ("label: gpt\n"
                 "size=32MiB, type=U, name=esp\n"
                 "size=8MiB, name=root-a\n"
                 "size=8MiB, name=root-b\n"
                 "name=quantix-data\n")
NEED = 6_100_000_000


def sh(*cmd: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload]


def our_mounts() -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if "qx-disk-" in line]


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``loops(size_mib, table=None)``: a sparse file attached as a loop device, with the given sfdisk
    script as its partition table; partition nodes are made to exist (partx, for kernels that do not
    scan loop devices). Everything is unmounted and detached afterwards."""
    if os.geteuid() != 0:
        pytest.fail("disk tests need root (loop devices); deselect them with -m 'not root'")
    attached: list[str] = []

    def make(size_mib: int = 96, table: str | None = None) -> str:
        img = tmp_path / f"disk{len(attached)}.img"
        with img.open("wb") as f:
            f.truncate(size_mib * MiB)
        if table:
            sh("sfdisk", "-q", str(img), input=table)
        dev = sh("losetup", "-f", "--show", "-P", str(img)).stdout.strip()
        attached.append(dev)
        if table:
            n = table.count("name=")
            if not all(os.path.exists(f"{dev}p{i}") for i in range(1, n + 1)):
                subprocess.run(["partx", "-a", dev], check=False, capture_output=True)
            missing = [f"{dev}p{i}" for i in range(1, n + 1) if not os.path.exists(f"{dev}p{i}")]
            assert not missing, f"partition nodes did not appear: {missing}"
        return dev

    try:
        yield make
    finally:
        for dev in attached:
            for line in Path("/proc/self/mountinfo").read_text().splitlines():
                fields = line.split()
                src = line.split(" - ", 1)[1].split()[1] if " - " in line else ""
                if src.startswith(dev + "p") or src == dev:
                    subprocess.run(["umount", "-l", fields[4]], check=False)
            subprocess.run(["losetup", "-d", dev], check=False)


def make_esp(part: str, entries: dict[str, str]) -> None:
    """A vfat ESP with boot entries ``{filename: version}`` (written with mtools: no mount needed)."""
    sh("mkfs.vfat", "-n", "ESP", part)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    sh("mmd", "-i", part, "::/loader", "::/loader/entries", env=env)
    for fname, version in entries.items():
        slot = bootentry.parse_entry_name(fname)
        assert slot is not None
        text = bootentry.render_entry(version=version, slot=slot.slot, base_cmdline="ro console=ttyS0")
        sh("mcopy", "-i", part, "-", f"::/loader/entries/{fname}", input=text, env=env)


def make_data(part: str, tmp: Path, *, hostname: str | None = "hv-test", marker: object = None) -> None:
    """An ext4 data partition populated from a directory (mkfs.ext4 -d: no mount needed)."""
    tree = tmp / f"data-{os.path.basename(part)}"
    (tree / "lib/quantix/config").mkdir(parents=True)
    if hostname is not None:
        (tree / "lib/quantix/config/hostname").write_text(hostname + "\n")
    if marker is not None:
        (tree / "lib/quantix/install.json").write_text(marker if isinstance(marker, str) else json.dumps(marker))
    sh("mkfs.ext4", "-q", "-L", "data", "-d", str(tree), part)


@pytest.fixture
def quantix_disk(loops: Callable[..., str], tmp_path: Path) -> str:
    dev = loops(96, QUANTIX_TABLE)
    make_esp(f"{dev}p1", {"quantix-a.conf": "1.2.0", "quantix-b+2.conf": "1.3.0"})
    make_data(f"{dev}p4", tmp_path)
    return dev


def only(dev: str, **kw: object) -> Disk:
    listed = disks.list_disks(include=[dev], **kw)  # type: ignore[arg-type]
    found = [d for d in listed if d.path == dev]
    assert len(found) == 1, [d.path for d in listed]
    return found[0]


# ---------------------------------------------------------------------------------------------
# Real loop devices.


@pytest.mark.root
def test_lists_a_quantix_disk_with_its_partitions_and_install(quantix_disk: str) -> None:
    d = only(quantix_disk, min_bytes=32 * MiB)
    assert d.name == os.path.basename(quantix_disk) and d.size == 96 * MiB and d.transport == "loop"
    assert not d.read_only and not d.boot_medium and d.unusable == ""
    assert d.stable_path == (f"/dev/disk/by-id/{d.by_id[0]}" if d.by_id else quantix_disk)
    assert [(p.path, p.number, p.partlabel, p.fstype) for p in d.partitions] == [
        (f"{quantix_disk}p1", 1, "esp", "vfat"), (f"{quantix_disk}p2", 2, "root-a", ""),
        (f"{quantix_disk}p3", 3, "root-b", ""), (f"{quantix_disk}p4", 4, "quantix-data", "ext4")]
    assert d.partitions[0].size == 32 * MiB and d.partitions[3].label == "data"
    assert d.quantix == ExistingInstall(version="1.3.0", hostname="hv-test", complete=True, default_slot="b",
                                        slots={"a": "1.2.0", "b": "1.3.0"})
    assert "Quantix OS 1.3.0 (hv-test)" in d.describe() and "96" not in d.unusable
    assert our_mounts() == []


@pytest.mark.root
def test_loop_devices_are_listed_only_when_included(quantix_disk: str) -> None:
    assert quantix_disk not in [d.path for d in disks.list_disks(min_bytes=1)]
    assert quantix_disk in [d.path for d in disks.list_disks(min_bytes=1, include=[quantix_disk])]


@pytest.mark.root
def test_too_small_and_boot_medium_are_unusable(quantix_disk: str) -> None:
    small = only(quantix_disk, min_bytes=NEED)
    assert small.unusable == "is 100.7 MB; Quantix needs at least 6.1 GB"
    close = only(quantix_disk, min_bytes=96 * MiB + 1)   # both read "100.7 MB": say it in bytes
    assert close.unusable == "is 100,663,296 bytes; Quantix needs at least 100,663,297 bytes"
    boot = only(quantix_disk, min_bytes=1, boot_medium=[quantix_disk])
    assert boot.boot_medium and boot.unusable == "it is the installation medium"


@pytest.mark.root
def test_upgrade_slot_order_follows_systemd_boot(loops: Callable[..., str], tmp_path: Path) -> None:
    """A slot whose tries ran out (+0-3) is booted last, whatever its version."""
    dev = loops(96, QUANTIX_TABLE)
    make_esp(f"{dev}p1", {"quantix-a.conf": "1.2.0", "quantix-b+0-3.conf": "1.3.0"})
    make_data(f"{dev}p4", tmp_path, hostname="rolled-back")
    q = disks.existing_install(dev)
    assert q == ExistingInstall(version="1.2.0", hostname="rolled-back", complete=True, default_slot="a",
                                slots={"a": "1.2.0", "b": "1.3.0"})


@pytest.mark.root
def test_interrupted_install(loops: Callable[..., str], tmp_path: Path) -> None:
    dev = loops(96, QUANTIX_TABLE)
    make_esp(f"{dev}p1", {})
    make_data(f"{dev}p4", tmp_path, hostname=None, marker={"state": "installing", "version": "1.4.0"})
    assert disks.existing_install(dev) == ExistingInstall(version="1.4.0", hostname="?", complete=False,
                                                          default_slot="", slots={})
    make_data(f"{dev}p4", tmp_path / "2", marker={"state": "complete", "version": "1.4.0"})
    assert disks.existing_install(dev).complete  # type: ignore[union-attr]
    make_data(f"{dev}p4", tmp_path / "3", marker="{not json")
    assert not disks.existing_install(dev).complete  # type: ignore[union-attr]
    assert our_mounts() == []


@pytest.mark.root
def test_unreadable_parts_give_question_marks(loops: Callable[..., str]) -> None:
    """Quantix partition names but no filesystems: reported, never raised, nothing left mounted."""
    dev = loops(96, QUANTIX_TABLE)
    assert disks.existing_install(dev) == ExistingInstall(version="?", hostname="?", complete=False,
                                                          default_slot="?", slots={})
    assert our_mounts() == []
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("qx-disk-*"))


@pytest.mark.root
def test_a_mounted_partition_is_read_in_place_and_marks_the_disk_in_use(quantix_disk: str, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sh("mount", "-o", "ro", f"{quantix_disk}p4", str(mnt))
    try:
        d = only(quantix_disk, min_bytes=1)
        assert d.quantix is not None and d.quantix.hostname == "hv-test"
        assert d.unusable == f"it is in use ({os.path.basename(quantix_disk)}p4 is mounted at {mnt})"
        assert os.path.ismount(mnt)  # still mounted: not ours to unmount
    finally:
        sh("umount", str(mnt))


@pytest.mark.root
def test_disks_without_quantix(loops: Callable[..., str]) -> None:
    blank = loops(64)
    other = loops(64, "label: gpt\nsize=16MiB, name=esp\nname=home\n")
    sh("mkfs.ext4", "-q", "-L", "home", f"{other}p2")
    assert disks.existing_install(blank) is None and disks.existing_install(other) is None
    b = only(blank, min_bytes=1)
    assert b.partitions == () and b.quantix is None
    o = only(other, min_bytes=1)
    assert [(p.partlabel, p.fstype, p.label) for p in o.partitions] == [("esp", "", ""), ("home", "ext4", "home")]
    assert o.quantix is None and "2 partition(s)" in o.describe()


@pytest.mark.root
def test_find_boot_medium_by_label_and_by_mount(loops: Callable[..., str], tmp_path: Path) -> None:
    medium = loops(64, "label: gpt\nsize=32MiB, name=iso\n")
    sh("mkfs.vfat", "-n", disks.BOOT_LABELS[0], f"{medium}p1")
    assert medium in disks.find_boot_medium(media_mount=tmp_path / "nothing-mounted-here")
    assert disks.whole_disk(f"{medium}p1") == medium and disks.whole_disk(medium) == medium

    mounted = loops(64, "label: gpt\nsize=32MiB, name=media\n")
    sh("mkfs.ext4", "-q", f"{mounted}p1")
    mnt = tmp_path / "media dir"   # a space: mountinfo escapes it
    mnt.mkdir()
    sh("mount", "-o", "ro", f"{mounted}p1", str(mnt))
    try:
        found = disks.find_boot_medium(media_mount=mnt)
    finally:
        sh("umount", str(mnt))
    assert {medium, mounted} <= found


@pytest.mark.root
def test_select_on_real_loops(loops: Callable[..., str]) -> None:
    small, big = loops(64), loops(160)
    listed = [d for d in disks.list_disks(min_bytes=100 * MiB, include=[small, big]) if d.path in (small, big)]
    assert disks.select(listed, DiskFilter(transport="loop", min_size=100 * MiB)).path == big
    # The small one matches too, but cannot be used: the one usable match is chosen.
    assert disks.select(listed, DiskFilter(transport="loop")).path == big
    both = [d for d in disks.list_disks(min_bytes=1, include=[small, big]) if d.path in (small, big)]
    with pytest.raises(UserError) as exc:
        disks.select(both, DiskFilter(transport="loop"))
    assert "matches 2 usable disks" in str(exc.value)
    assert all(f"  {d.stable_path}  " in str(exc.value) for d in both)


def test_boot_label_is_the_isos_volume_id() -> None:
    from qx_build import iso

    assert iso.VOLUME_ID in disks.BOOT_LABELS


# ---------------------------------------------------------------------------------------------
# The filter, on plain Disk values.


def disk(path: str, *, by_id: tuple[str, ...] = (), model: str = "", serial: str = "", size: int = 500 * 10**9,
         transport: str = "sata", unusable: str = "") -> Disk:
    return Disk(path=path, name=os.path.basename(path), by_id=by_id, model=model, serial=serial, size=size,
                transport=transport, removable=False, read_only=False, partitions=(), quantix=None,
                boot_medium=False, unusable=unusable)


FLEET = [
    disk("/dev/nvme0n1", by_id=("nvme-Samsung_SSD_980_1TB_S4EWNX0R123", "nvme-eui.0025385b"),
         model="Samsung SSD 980 1TB", serial="S4EWNX0R123", size=10**12, transport="nvme"),
    disk("/dev/sda", by_id=("ata-WDC_WD20EFRX_WD-WCC4M1", "wwn-0x50014ee2"), model="WDC WD20EFRX-68E",
         serial="WD-WCC4M1", size=2 * 10**12),
    disk("/dev/sdb", by_id=("usb-SanDisk_Cruzer_4C53",), model="Cruzer", serial="4C53", size=16 * 10**9,
         transport="usb", unusable="it is the installation medium"),
]


@pytest.mark.parametrize("filt,expected", [
    (DiskFilter(by_id="nvme-Samsung*"), "/dev/nvme0n1"),
    (DiskFilter(by_id="wwn-0x50014ee2"), "/dev/sda"),
    (DiskFilter(model="samsung ssd 980*"), "/dev/nvme0n1"),      # case-insensitive glob
    (DiskFilter(model="WDC WD20EFRX-68E"), "/dev/sda"),           # exact
    (DiskFilter(serial="WD-*"), "/dev/sda"),
    (DiskFilter(transport="nvme"), "/dev/nvme0n1"),
    (DiskFilter(min_size=10**12 + 1), "/dev/sda"),
    (DiskFilter(min_size=10**12, max_size=10**12), "/dev/nvme0n1"),  # bounds are inclusive
    (DiskFilter(max_size=32 * 10**9, transport="sata", min_size=1), None),
])
def test_select_rules(filt: DiskFilter, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(UserError):
            disks.select(FLEET, filt)
    else:
        assert disks.select(FLEET, filt).path == expected


def test_select_never_guesses_and_lists_every_candidate() -> None:
    with pytest.raises(UserError) as exc:
        disks.select(FLEET, DiskFilter(min_size=10 * 10**9))
    msg = str(exc.value)
    assert msg.startswith("install.disk (min_size=10.0 GB) matches 2 usable disks; the installer never guesses:")
    assert exc.value.hint and "narrow" in exc.value.hint
    lines = msg.splitlines()[1:]
    assert lines == [
        "  /dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S4EWNX0R123  Samsung SSD 980 1TB  serial S4EWNX0R123  1.0 TB  "
        "nvme: matches: size 1.0 TB >= min_size 10.0 GB",
        "  /dev/disk/by-id/ata-WDC_WD20EFRX_WD-WCC4M1  WDC WD20EFRX-68E  serial WD-WCC4M1  2.0 TB  sata: "
        "matches: size 2.0 TB >= min_size 10.0 GB",
        "  /dev/disk/by-id/usb-SanDisk_Cruzer_4C53  Cruzer  serial 4C53  16.0 GB  usb: matches: size 16.0 GB >= "
        "min_size 10.0 GB; but cannot be used: it is the installation medium",
    ]


def test_select_no_match_says_why_for_each_disk() -> None:
    with pytest.raises(UserError) as exc:
        disks.select(FLEET, DiskFilter(model="Samsung*", transport="sata"))
    lines = str(exc.value).splitlines()
    assert lines[0] == "install.disk (model=Samsung* transport=sata) matches no usable disk; the disks:"
    assert lines[1].endswith("does not match: transport nvme is not sata")
    assert lines[2].endswith("does not match: model 'WDC WD20EFRX-68E' does not match 'Samsung*'")
    assert lines[3].endswith("does not match: model 'Cruzer' does not match 'Samsung*'; transport usb is not sata")


def test_select_a_matching_but_unusable_disk() -> None:
    with pytest.raises(UserError) as exc:
        disks.select(FLEET, DiskFilter(transport="usb"))
    assert "matches no usable disk (the matching disks cannot be used)" in str(exc.value)
    assert "but cannot be used: it is the installation medium" in str(exc.value)


def test_select_without_by_id_links() -> None:
    """No udev: by_id filters cannot match, and the message says so instead of failing obscurely."""
    bare = [replace(d, by_id=()) for d in FLEET]
    assert bare[0].stable_path == "/dev/nvme0n1"
    with pytest.raises(UserError) as exc:
        disks.select(bare, DiskFilter(by_id="nvme-*"))
    assert "/dev/nvme0n1  Samsung SSD 980 1TB" in str(exc.value) and "has no /dev/disk/by-id name" in str(exc.value)


def test_select_empty_filter_and_no_disks() -> None:
    with pytest.raises(UserError, match="the disk filter is empty"):
        disks.select(FLEET, DiskFilter())
    with pytest.raises(UserError, match="has no disks the installer can see"):
        disks.select([], DiskFilter(model="x"))


def test_describe_and_stable_path() -> None:
    d = FLEET[0]
    assert d.stable_path == "/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S4EWNX0R123"
    assert d.by_id_paths[1] == "/dev/disk/by-id/nvme-eui.0025385b"
    assert d.describe() == ("/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S4EWNX0R123  (nvme0n1)  Samsung SSD 980 1TB  "
                            "serial S4EWNX0R123  1.0 TB  nvme")
    assert "cannot be used: it is the installation medium" in FLEET[2].describe()
