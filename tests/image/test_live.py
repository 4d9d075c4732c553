"""The ISO's live system from the disk build's tree (qx_build.live + image/scripts/finalize), on real
files: the finalize script run on a small tree, the archive checked against the shell pipeline it
replaces, ukify and systemd-repart for real, the ESP read back with mtools and the UKI's sections with
qx_build.pe."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from qx_build import gpt, live, pe
from qx_build.paths import REPO
from qx_common.errors import ExternalError

EPOCH = 1767225600
KVER = "6.12.0-test-amd64"
HOST_STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")  # systemd-boot-efi (image/host-deps.sh)
# What image/scripts/finalize's export replaced, and what qx_build.live.archive must give byte for byte.
PIPELINE = ("find . -mindepth 1 \\( -path ./etc/fstab -o -path ./boot \\) -prune -o -printf '%P\\0' "
            "| LC_ALL=C sort -z | cpio --create --reproducible --null --format=newc --quiet")


def _tree(root: Path) -> None:
    """The few paths image/scripts/finalize works on, as a Debian tree has them."""
    for d in ("etc/libvirt/qemu/networks/autostart", "etc/systemd", "var/lib", "usr/lib/systemd/boot/efi",
              f"usr/lib/modules/{KVER}/kernel", "usr/bin", "boot"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/shadow").write_text("root:!:20000:0:99999:7:::\n")
    (root / "etc/fstab").write_text("PARTLABEL=quantix-data /var ext4 defaults 0 2\n")
    (root / "etc/libvirt/libvirtd.conf").write_text("# factory\n")
    (root / "usr/lib/os-release").write_text('ID=debian\nIMAGE_ID=quantix-os\nIMAGE_VERSION="0.0.1"\n')
    (root / "usr/bin/qx-tool").write_text("#!/bin/sh\n")
    (root / "usr/lib/systemd/boot/efi/systemd-bootx64.efi").write_bytes(b"MZ boot")
    (root / "usr/lib/systemd/boot/efi/linuxx64.efi.stub").write_bytes(HOST_STUB.read_bytes())
    # The kernel twice, as the package installs it: finalize makes the modules directory's copy a link.
    kernel = b"MZ kernel " + os.urandom(4096)
    (root / f"boot/vmlinuz-{KVER}").write_bytes(kernel)
    (root / f"usr/lib/modules/{KVER}/vmlinuz").write_bytes(kernel)


def _finalize(tmp_path: Path) -> Path:
    """Run the real finalize script as mkosi would (BUILDROOT, OUTPUTDIR, SOURCE_DATE_EPOCH)."""
    root, out = tmp_path / "root", tmp_path / "out"
    _tree(root)
    out.mkdir()
    (out / "quantix-live").mkdir()  # an older build's export: finalize removes it
    env = {"PATH": os.environ["PATH"], "BUILDROOT": str(root), "OUTPUTDIR": str(out),
           "SOURCE_DATE_EPOCH": str(EPOCH)}
    res = subprocess.run([str(REPO / "image/scripts/finalize")], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tree finalize exported (``quantix-tree/`` in its OUTPUTDIR)."""
    return _finalize(tmp_path_factory.mktemp("finalize")) / live.TREE_DIR


@dataclass(frozen=True)
class Entry:
    name: bytes
    mode: int
    uid: int
    nlink: int
    mtime: int
    data: bytes


def _newc(archive: bytes) -> list[Entry]:
    """The entries of a newc cpio archive, read by the format's own rules (not cpio -t, which prints names
    as lines, so a name with a newline or bytes that are not UTF-8 would not survive)."""
    entries, pos = [], 0
    while True:
        assert archive[pos:pos + 6] == b"070701", pos
        f = [int(archive[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        _ino, mode, uid, _gid, nlink, mtime, filesize, *_, namesize, _check = f
        name = archive[pos + 110:pos + 110 + namesize - 1]
        pos += (110 + namesize + 3) & ~3
        data = archive[pos:pos + filesize]
        pos += (filesize + 3) & ~3
        if name == b"TRAILER!!!":
            return entries
        entries.append(Entry(name, mode, uid, nlink, mtime, data))


def _esp_file(disk: Path, path: str, dest: Path) -> bytes:
    esp = [p for p in gpt.read_table(disk) if p.type == gpt.ESP_TYPE]
    assert len(esp) == 1, esp
    subprocess.run(["mcopy", "-n", "-i", f"{disk}@@{esp[0].start}", f"::{path}", str(dest)], check=True,
                   env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    return dest.read_bytes()


def test_finalize_exports_the_tree_with_every_mtime_at_the_epoch(exported: Path) -> None:
    assert exported.is_dir() and not (exported.parent / "quantix-live").exists()
    seen = 0
    for dirpath, dirs, files in os.walk(exported):
        for name in [*dirs, *files]:
            path = os.path.join(dirpath, name)
            assert os.lstat(path).st_mtime == EPOCH, path  # links too: their own time, not their target's
            seen += 1
    assert os.lstat(exported).st_mtime == EPOCH
    assert seen > 20
    # The tree as finalize left it: the host's configuration points at the data partition, the root's
    # copy of the kernel at /boot's.
    assert os.readlink(exported / "etc/shadow") == "/var/lib/quantix/config/shadow"
    assert (exported / "usr/share/quantix/factory/shadow").read_text().startswith("root:!:")
    assert os.readlink(exported / f"usr/lib/modules/{KVER}/vmlinuz") == f"../../../../boot/vmlinuz-{KVER}"
    assert (exported / "etc/fstab").is_file() and (exported / f"boot/vmlinuz-{KVER}").is_file()


def test_the_archive_of_the_tree_leaves_out_fstab_and_boot(exported: Path, tmp_path: Path) -> None:
    cpio = tmp_path / "root.cpio"
    cpio.write_bytes(b"an older archive")
    live.archive(exported, cpio)
    assert not (tmp_path / "root.cpio.part").exists()
    entries = _newc(cpio.read_bytes())
    names = [e.name for e in entries]
    assert names == sorted(names) and len(set(names)) == len(names)  # bytewise, as LC_ALL=C sort
    assert b"etc/fstab" not in names                                   # the installed host's mounts
    assert not [n for n in names if n == b"boot" or n.startswith(b"boot/")]  # the UKI carries the kernel
    for name in (b"etc/shadow", b"usr/bin/qx-tool", b"usr/lib/os-release", b"etc", b"usr",
                 f"usr/lib/modules/{KVER}/vmlinuz".encode()):
        assert name in names, name
    assert not [n for n in names if n.startswith((b"/", b"./"))]
    assert {e.mtime for e in entries} == {EPOCH}
    by_name = {e.name: e for e in entries}
    assert by_name[b"usr/bin/qx-tool"].data == b"#!/bin/sh\n"
    assert by_name[b"etc/shadow"].data == b"/var/lib/quantix/config/shadow"  # a link: its target
    # The same tree gives the same archive.
    again = tmp_path / "again.cpio"
    live.archive(exported, again)
    assert again.read_bytes() == cpio.read_bytes()


def _awkward_tree(root: Path) -> None:
    """Names and kinds of entries a tree may hold that a hand-written walk gets wrong."""
    b = os.fsencode(root)
    for d in (b"etc/fstab.d", b"boot/efi", b"usr/lib/real dir/sub", b"empty", b"a", b"a/b"):
        os.makedirs(os.path.join(b, d), exist_ok=True)
    files = {
        b"etc/fstab": b"/dev/sda1 / ext4\n",
        b"etc/fstab.d/x": b"kept: only etc/fstab itself is left out\n",
        b"etc/fstab.orig": b"kept\n",
        b"boot/vmlinuz": b"MZ kernel",
        b"boot/efi/loader.conf": b"timeout 0\n",
        b"bootstrap": b"kept: only boot/ is left out\n",
        b"a-b": b"1", b"a.b": b"2", b"a/b/c": b"3", b"a/B": b"4", b"A": b"5",
        b"usr/lib/real dir/sub/with space.txt": b"space\n",
        b"usr/lib/caf\xe9": b"latin-1 name, not UTF-8\n",
        b"usr/lib/new\nline": b"newline in the name\n",
        b"usr/lib/\xff\xfe": b"high bytes sort last\n",
        b"usr/lib/hard": b"two names, one inode\n",
    }
    for name, data in files.items():
        with open(os.path.join(b, name), "wb") as f:
            f.write(data)
    os.link(os.path.join(b, b"usr/lib/hard"), os.path.join(b, b"usr/lib/hard-too"))
    os.symlink(b"real dir", os.path.join(b, b"usr/lib/link to dir"))
    os.symlink(b"boot", os.path.join(b, b"boot-link"))
    os.symlink(b"/nowhere", os.path.join(b, b"dangling"))
    os.chmod(os.path.join(b, b"usr/lib/caf\xe9"), 0o4755)
    if os.geteuid() == 0:
        os.chown(os.path.join(b, b"usr/lib/hard"), 1234, 5678)
    for dirpath, dirs, names in os.walk(b):
        for name in [*dirs, *names]:
            os.utime(os.path.join(dirpath, name), (EPOCH, EPOCH), follow_symlinks=False)


def test_the_archive_is_what_the_shell_pipeline_makes(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    _awkward_tree(tree)
    expected = subprocess.run(["bash", "-o", "pipefail", "-c", PIPELINE], cwd=tree, capture_output=True,
                              check=True).stdout
    cpio = tmp_path / "tree.cpio"
    live.archive(tree, cpio)
    assert cpio.read_bytes() == expected

    by_name = {e.name: e for e in _newc(cpio.read_bytes())}
    names = list(by_name)
    assert names == sorted(names)
    for kept in (b"etc/fstab.d/x", b"etc/fstab.orig", b"bootstrap", b"boot-link", b"usr/lib/caf\xe9",
                 b"usr/lib/new\nline", b"usr/lib/\xff\xfe", b"usr/lib/real dir/sub/with space.txt", b"empty",
                 b"dangling"):
        assert kept in by_name, kept
    assert not {b"etc/fstab", b"boot", b"boot/vmlinuz", b"boot/efi", b"boot/efi/loader.conf"} & set(names)
    assert names.index(b"a-b") < names.index(b"a.b") < names.index(b"a/B") < names.index(b"a/b")
    # The link to a directory is archived as a link (not followed), the hard link as two names of one file.
    link = by_name[b"usr/lib/link to dir"]
    assert link.mode & 0o170000 == 0o120000 and link.data == b"real dir"
    assert not [n for n in names if n.startswith(b"usr/lib/link to dir/")]
    assert by_name[b"usr/lib/hard"].nlink == by_name[b"usr/lib/hard-too"].nlink == 2
    assert by_name[b"usr/lib/caf\xe9"].mode & 0o7777 == 0o4755
    if os.geteuid() == 0:
        assert by_name[b"usr/lib/hard"].uid == 1234


def test_the_live_esp_boots_the_exported_tree(exported: Path, tmp_path: Path) -> None:
    cpio = tmp_path / "root.cpio"
    live.archive(exported, cpio)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(os.urandom(1 << 20))              # ukify stores the kernel as bytes

    disk = live.build_esp(exported, kernel, tmp_path / "work", source_date_epoch=EPOCH)
    uki = tmp_path / "BOOTX64.EFI"
    _esp_file(disk, "EFI/BOOT/BOOTX64.EFI", uki)
    assert pe.read_section(uki, ".linux")[: 1 << 20] == kernel.read_bytes()
    assert pe.read_section(uki, ".initrd")[: cpio.stat().st_size] == cpio.read_bytes()
    assert pe.read_section(uki, ".cmdline").rstrip(b"\0").decode() == live.CMDLINE
    assert pe.read_section(uki, ".uname").rstrip(b"\0").decode() == KVER
    assert "quantix.live=1" in live.CMDLINE
    # Nothing of the UKI's making is left beside it, nor in the tree.
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["esp.repart.d", "live.raw"]

    # Reproducible: the same inputs give the same ESP files, byte for byte, at the same places. Not the whole
    # image: the FAT directory entries' creation and write times come from the clock (systemd-repart 254
    # makes the directories with mtools, which does not read SOURCE_DATE_EPOCH), so two builds in
    # different seconds differ in those 16 bytes; the UKI inside does not.
    again = live.build_esp(exported, kernel, tmp_path / "work2", source_date_epoch=EPOCH)
    assert _esp_file(again, "EFI/BOOT/BOOTX64.EFI", tmp_path / "again.efi") == uki.read_bytes()
    assert [(p.start, p.size, p.type) for p in gpt.read_table(again)] == \
        [(p.start, p.size, p.type) for p in gpt.read_table(disk)]


def test_a_tree_without_what_the_live_uki_needs_is_named_with_the_fix(tmp_path: Path) -> None:
    tree = tmp_path / live.TREE_DIR
    tree.mkdir()
    with pytest.raises(ExternalError) as e:
        live.build_esp(tree, tmp_path / "vmlinuz", tmp_path / "work", source_date_epoch=EPOCH)
    for missing in ("linuxx64.efi.stub", "os-release", "usr/lib/modules"):
        assert missing in e.value.message, missing
    assert str(tree) in e.value.message
    assert "make image" in (e.value.hint or "")


def test_a_tree_with_two_kernels_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / live.TREE_DIR
    _tree(tree)
    (tree / "usr/lib/modules/6.13.0-test-amd64").mkdir()
    with pytest.raises(ExternalError) as e:
        live.build_esp(tree, tmp_path / "vmlinuz", tmp_path / "work", source_date_epoch=EPOCH)
    assert "usr/lib/modules" in e.value.message and "found 2" in e.value.message
    assert "linuxx64.efi.stub" not in e.value.message  # only what is wrong is named
    assert "make image" in (e.value.hint or "")
