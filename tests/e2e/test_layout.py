"""The built release on disk: partition layout, ESP boot entries, manifest and checksums."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from qx_build import erofs, esp, gpt, pe, size
from qx_build.paths import Release, read_mkosi_setting
from qx_common import verity
from qx_update import bootentry

GiB = 1024**3
READ_ONLY_BIT = 60  # GPT attribute bits (UAPI discoverable partitions spec)
NO_AUTO_BIT = 63


def test_partition_table_is_exactly_esp_slots_with_verity_and_data(release: Release) -> None:
    parts = gpt.read_table(release.disk)
    assert [p.name for p in parts] == ["esp", "root-a", "root-a-verity", "root-b", "root-b-verity", "quantix-data"]
    by = {p.name: p for p in parts}
    assert by["esp"].type == gpt.ESP_TYPE
    assert by["root-a"].type == by["root-b"].type == gpt.ROOT_X86_64_TYPE
    assert by["root-a-verity"].type == by["root-b-verity"].type == gpt.ROOT_X86_64_VERITY_TYPE
    assert by["quantix-data"].type == gpt.LINUX_GENERIC_TYPE
    # A slot with its verity partition takes 2 GiB, as a slot did before verity: the data partition of a
    # host installed then starts where this layout's does (an install with "keep data" keeps it in place).
    assert by["root-a"].size + by["root-a-verity"].size == by["root-b"].size + by["root-b-verity"].size == 2 * GiB
    assert by["quantix-data"].start == by["esp"].start + by["esp"].size + 4 * GiB
    assert verity.tree_size(by["root-a"].size) <= by["root-a-verity"].size
    assert f"GUID:{READ_ONLY_BIT}" in by["root-a"].attrs.replace(" ", ",") or str(READ_ONLY_BIT) in by["root-a"].attrs
    for name in ("root-a", "root-b", "root-a-verity", "root-b-verity"):
        assert str(NO_AUTO_BIT) in by[name].attrs, f"{name} must be excluded from GPT auto-discovery"


def test_slot_a_is_sealed_for_the_root_hash_on_the_uki(release: Release, tmp_path: Path) -> None:
    """The UKI's signed command line names slot A's partitions by its root hash, and slot A's verity
    partition holds the tree of exactly the root payload's bytes (veritysetup, cryptsetup's own check)."""
    roothash = verity.roothash_of(pe.cmdline(release.uki))
    assert roothash is not None and "root=/dev/mapper/root" in pe.cmdline(release.uki).split()
    m = json.loads(release.manifest.read_text())["artifacts"]["root"]
    assert m["verity"]["roothash"] == roothash
    by = {p.name: p for p in gpt.read_table(release.disk)}
    assert (by["root-a"].uuid, by["root-a-verity"].uuid) == verity.partuuids(roothash)
    data, tree = tmp_path / "root", tmp_path / "tree"
    with release.disk.open("rb") as f:
        f.seek(by["root-a"].start)
        data.write_bytes(f.read(m["slot_size_min"]))
        f.seek(by["root-a-verity"].start)
        tree.write_bytes(f.read(by["root-a-verity"].size))
    subprocess.run(["veritysetup", "verify", data, tree, roothash], check=True, capture_output=True)
    # One changed block of the root and the same check fails: what the kernel's dm-verity reports as an I/O error.
    with data.open("r+b") as f:
        f.seek(len(data.read_bytes()) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))
    assert subprocess.run(["veritysetup", "verify", data, tree, roothash], capture_output=True).returncode != 0


def test_root_b_is_empty_and_root_a_is_erofs(release: Release) -> None:
    by = {p.name: p for p in gpt.read_table(release.disk)}
    with release.disk.open("rb") as f:
        f.seek(by["root-b"].start)
        assert f.read(1 << 20) == b"\0" * (1 << 20), "root-b must be empty until an update writes it"
        f.seek(by["root-a"].start + 1024)
        assert int.from_bytes(f.read(4), "little") == erofs.EROFS_MAGIC


def test_esp_boots_slot_a_through_a_type1_entry(release: Release, tmp_path: Path) -> None:
    e = esp.EspImage(release.disk, source_date_epoch=int(read_mkosi_setting("SourceDateEpoch")))
    assert e.list("EFI/quantix") == [f"quantix-os_{release.version}.efi"]
    assert e.list("EFI/Linux") == [], "mkosi's UKI (placeholder root hash) must not stay on the ESP"
    assert e.copy_out(bootentry.uki_path(release.version), tmp_path / "uki.efi").read_bytes() == release.uki.read_bytes()
    assert e.list("loader/entries") == ["quantix-a.conf"]
    entry = bootentry.parse_entry(e.read_text("loader/entries/quantix-a.conf"))
    assert entry["efi"] == f"/{bootentry.uki_path(release.version)}"
    assert entry["options"] == bootentry.slot_cmdline(pe.cmdline(release.uki), "a")
    assert "BOOTX64.EFI" in e.list("EFI/BOOT"), "systemd-boot must be the removable-media fallback loader"


def test_manifest_and_sha256sums_describe_the_files(release: Release) -> None:
    subprocess.run(["sha256sum", "--check", "--strict", release.sha256sums.name], cwd=release.sha256sums.parent,
                   check=True, capture_output=True)
    listed = {line.split()[1] for line in release.sha256sums.read_text().splitlines()}
    assert listed == {f.name for f in release.files() if f != release.sha256sums}
    m = json.loads(release.manifest.read_text())
    assert m["version"] == release.version and m["image_id"] == "quantix-os"
    assert m["build_time"].startswith("20") and m["source_date_epoch"] == int(read_mkosi_setting("SourceDateEpoch"))
    names = {p["name"] for p in m["packages"]}
    assert {"linux-image-amd64", "systemd", "libvirt-daemon-system", "qemu-system-x86", "python3"} <= names
    root = m["artifacts"]["root"]
    assert root["file"] == release.root_payload.name and root["size"] == release.root_payload.stat().st_size
    assert root["uncompressed_size"] <= 2 * GiB
    assert m["kernel_cmdline"] == pe.cmdline(release.uki)
    osrel = pe.read_section(release.uki, ".osrel").decode()
    assert 'NAME="Quantix OS"' in osrel and f'IMAGE_VERSION="{release.version}"' in osrel


def test_payload_decompresses_to_the_root_filesystem(release: Release) -> None:
    m = json.loads(release.manifest.read_text())["artifacts"]["root"]
    proc = subprocess.run(f"zstd -dc {release.root_payload} | sha256sum", shell=True, check=True,
                          capture_output=True, text=True)
    assert proc.stdout.split()[0] == m["uncompressed_sha256"]


def test_iso_is_hybrid_el_torito_and_gpt(release: Release) -> None:
    report = subprocess.run(["xorriso", "-indev", str(release.iso), "-report_el_torito", "plain"],
                            capture_output=True, text=True, check=True).stdout
    assert "El Torito boot img" in report and "UEFI" in report
    parts = gpt.read_table(release.iso)
    assert any(p.type == gpt.ESP_TYPE for p in parts), "the ISO must also boot as a disk (GPT with an ESP)"


# What our code runs on a host (qx-update, qx-install, qx-node, the console), each started inside the built
# root: a trim of the image (a library, a gconv module, a helper) that breaks one of them fails here, not on
# a server. The mtools calls are qx_update.espfat's on a FAT image, as the installer and qx-update use them
# (mtools refuses every FAT without glibc's code page 850 converter).
HOST_TOOLS = [
    ["sfdisk", "--version"], ["blkid", "-V"], ["lsblk", "--version"], ["partx", "--version"],
    ["udevadm", "--version"], ["zstd", "--version"], ["sbverify", "--version"], ["loadkeys", "-V"],
    ["ip", "-V"], ["mount", "--version"], ["systemctl", "--version"], ["journalctl", "--version"],
    ["modprobe", "--version"], ["mkfs.ext4", "-V"], ["e2fsck", "-V"], ["mkfs.vfat", "--help"],
    ["qemu-img", "--version"], ["qemu-system-x86_64", "--version"], ["virsh", "--version"],
    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/tmp/hostkey"],
    ["/usr/lib/quantix/venv/bin/python", "-c",
     "import libvirt, qx_node.app, qx_update.cli, qx_console.app, qx_install.engine"],
    ["mmd", "-i", "/tmp/esp.img", "::/EFI"],
    ["mcopy", "-i", "/tmp/esp.img", "/usr/lib/os-release", "::/EFI/os-release"],
    ["mdir", "-i", "/tmp/esp.img", "::/EFI"],
    ["mtype", "-i", "/tmp/esp.img", "::/EFI/os-release"],
    ["mmove", "-i", "/tmp/esp.img", "::/EFI/os-release", "::/EFI/moved"],
    ["mdel", "-i", "/tmp/esp.img", "::/EFI/moved"],
]


@pytest.fixture(scope="module")
def built_root(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The release's root filesystem mounted read-only (from its update payload), with a scratch /tmp."""
    tmp = tmp_path_factory.mktemp("root")
    raw, mnt, scratch = tmp / "root.erofs", tmp / "root", tmp / "scratch"
    mnt.mkdir()
    scratch.mkdir()
    subprocess.run(f"zstd -dcq {release.root_payload} > {raw}", shell=True, check=True)
    subprocess.run(["mount", "-o", "loop,ro", str(raw), str(mnt)], check=True)
    try:
        subprocess.run(["mount", "--bind", str(scratch), str(mnt / "tmp")], check=True)
        try:
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt / "tmp")], check=False)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        raw.unlink()


def test_the_tools_our_code_runs_start_in_the_built_root(built_root: Path) -> None:
    subprocess.run(["mkfs.vfat", "-C", str(built_root / "tmp/esp.img"), "8192"], check=True, capture_output=True)
    failed = []
    subprocess.run(["mount", "--bind", "/dev", str(built_root / "dev")], check=True)
    try:
        for argv in HOST_TOOLS:
            p = subprocess.run(["chroot", str(built_root), *argv], capture_output=True, text=True, timeout=120,
                               env={"PATH": "/usr/sbin:/usr/bin", "LANG": "C.UTF-8", "HOME": "/tmp"})
            if p.returncode != 0:
                failed.append(f"{' '.join(argv)} -> exit {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}")
    finally:
        subprocess.run(["umount", str(built_root / "dev")], check=False)
    assert not failed, "in the built root:\n" + "\n".join(failed)


# Where a link in /usr may point at nothing in the root image: runtime and host state, and the data partition.
OUTSIDE_THE_ROOT = ("/run", "/proc", "/sys", "/dev", "/tmp", "/var", "/etc", "/boot", "/efi")


def test_no_link_in_usr_points_at_something_the_image_removed(built_root: Path) -> None:
    """RemoveFiles= trims files by glob; a link whose target went (mkosi's globbing skips a link once
    its target is gone) is a trim half done."""
    dangling = []
    for dirpath, dirs, files in os.walk(built_root / "usr"):
        for name in dirs + files:
            link = Path(dirpath) / name
            if not link.is_symlink():
                continue
            target, hops = link, 0
            while target.is_symlink() and hops < 40:  # resolved inside the image, not on this machine
                to = os.readlink(target)
                target = Path(os.path.normpath(built_root / to.lstrip("/") if to.startswith("/")
                                               else target.parent / to))
                hops += 1
            inside = "/" + str(target.relative_to(built_root)) if target.is_relative_to(built_root) else str(target)
            if not target.exists() and not inside.startswith(OUTSIDE_THE_ROOT):
                dangling.append(f"/{link.relative_to(built_root)} -> {os.readlink(link)}")
    assert not dangling, "links to nothing in the built root:\n" + "\n".join(dangling)


def test_a_release_builds_update_payload_is_within_the_limit(release: Release) -> None:
    """Issue 13's limit on the build make test made: over 150 MB fails here, naming what grew since
    image/size-record.json (a FAST build is reported by make size, not judged)."""
    s = size.measure(release.disk.parent)
    assert s.profile == "release", "make test builds a release image (make image, not FAST=1)"
    size.check(s, size.load_record())
